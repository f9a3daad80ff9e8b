"""``stream-kt``: the command line, one click group with a command module per concern.

Click, not Typer: declarative options and nested commands from one mature library
(Typer adds type-hint parsing and rich output we have no use for).  The modules in
``commands/`` only parse, call and print; the work lives in the packages below them.

A ``StreamKTError`` (bad file, bad argument, bad checkpoint) or a usage error becomes one
line on stderr, ``stream-kt COMMAND: error: ...``, and exit status 2; anything else is a
bug and keeps its traceback.  ``--help`` exits 0.
"""

from __future__ import annotations

import sys

import click

from stream_kt.errors import StreamKTError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Streaming knowledge tracing."""


def _register() -> None:
    from stream_kt.commands import admin, bench, broker, compare, distill, offline, serve, tools

    for module in (offline, distill, compare, tools, serve, admin, broker, bench):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
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
