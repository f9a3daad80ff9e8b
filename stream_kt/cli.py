"""``stream-kt``: the command line, one click group with a command module per concern.

Click, not Typer: declarative options and nested commands from one mature library
(Typer adds type-hint parsing and rich output we have no use for).  The modules in
``commands/`` only parse, call and print; the work lives in the packages below them.

A ``StreamKTError`` (bad file, bad argument, bad checkpoint) or a usage error becomes one
line on stderr, ``stream-kt COMMAND: error: ...``, and exit status 2; anything else is a
bug and keeps its traceback.  ``--help`` exits 0.  A reader that closes stdout early
(``| head``) ends the command quietly with status 141, as a shell reports for a
writer the closed pipe killed.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from stream_kt.errors import StreamKTError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Streaming knowledge tracing."""


def _register() -> None:
    from stream_kt.commands import admin, audit, bench, broker, compare, distill, export, offline, serve, tools

    for module in (offline, audit, distill, compare, tools, export, serve, admin, broker, bench):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(sys.argv[1:] if argv is None else [str(a) for a in argv])
        finally:
            sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's last flush
    except BrokenPipeError:  # stdout closed early (stream-kt inspect --json | head -1): stop quietly, as a killed pipe writer does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush into the closed pipe at exit
        return 128 + signal.SIGPIPE


def _run(args: list[str]) -> int:
    name = args[0] if args and args[0] in cli.commands else None
    try:
        with cli.make_context("stream-kt", args) as ctx:
            return int(cli.invoke(ctx) or 0)
    except click.exceptions.Exit as exc:  # --help, or a command that exits on purpose
        raise SystemExit(exc.exit_code) from None
    except click.UsageError as exc:
        command = exc.ctx.info_name if exc.ctx is not None and exc.ctx.parent is not None else name or "stream-kt"
        print(f"stream-kt {command}: error: {exc.format_message()}".replace("stream-kt stream-kt", "stream-kt"), file=sys.stderr)
        return 2
    except StreamKTError as exc:
        print(f"stream-kt {name or ''}: error: {exc}".replace(" :", ":"), file=sys.stderr)
        return 2
    except (KeyboardInterrupt, click.Abort):
        print(f"stream-kt {name or ''}: interrupted".replace("  ", " "), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
