"""``stream-kt``: the command line, one click group with a command module per concern.

Click, not Typer: declarative options and nested commands from one mature library
(Typer adds type-hint parsing and rich output we have no use for).  The modules in
``commands/`` only parse, call and print; the work lives in the packages below them.

A command's module is imported only when that command runs or shows its own help
(``LazyGroup``): most of them import torch, which takes seconds, and ``stream-kt --help``
lists every command from ``COMMANDS`` alone.

A ``StreamKTError`` (bad file, bad argument, bad checkpoint) or a usage error becomes one
line on stderr, ``stream-kt COMMAND: error: ...``, and exit status 2; anything else is a
bug and keeps its traceback.  ``--help`` exits 0.  A reader that closes stdout early
(``| head``) ends the command quietly with status 141, as a shell reports for a
writer the closed pipe killed.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import sys

import click

from stream_kt.errors import StreamKTError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

# name -> (module in stream_kt.commands, the line ``stream-kt --help`` shows for it)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("offline", "write a synthetic data set (simulated students)"),
    "train": ("offline", "train a model and write a checkpoint directory"),
    "refit": ("offline", "train a checkpoint's model again on its training plus validation students"),
    "ensemble": ("offline", "combine trained checkpoints into one checkpoint serving their (weighted) mean prediction"),
    "evaluate": ("offline", "score held-out students with a checkpoint"),
    "audit": ("audit", "check a data set for leaks (multi-skill repeats) and what misleads an evaluation"),
    "distill": (
        "distill",
        "train a streamable student on a teacher checkpoint's mastery vectors and the observed answers",
    ),
    "compare": ("compare", "train and score several models on the same students; table, JSON and bar chart"),
    "replay": ("tools", "send a data set's answers to the input topic as concurrent students"),
    "inspect": ("tools", "show one student's state: recent answers and mastery per skill"),
    "demo": ("tools", "the whole pipeline on one machine: broker, Redis, model, serve, replay"),
    "serve": ("serve", "consume answer events, keep student state in Redis, produce mastery"),
    "export": ("export", "write the answers the brokers still retain to a file train reads (deduplicated by event id)"),
    "forget": ("admin", "erase one student's state from Redis (right to erasure; see --help for Kafka retention)"),
    "quality": ("admin", "online model quality from the stream: AUC, log-loss, RMSE, accuracy per model version"),
    "broker": ("broker", "run a local Kafka broker in the foreground (prints bootstrap=HOST:PORT when it serves)"),
    "bench": ("bench", "benchmark the model step and the whole pipeline against the alternatives"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported from ``COMMANDS`` when first asked for, not when the CLI starts."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"stream_kt.commands.{COMMANDS[cmd_name][0]}")
        return next(command for command in module.COMMANDS if command.name == cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings=CONTEXT)
def cli() -> None:
    """Streaming knowledge tracing."""


def command(name: str) -> click.Command:
    """The command ``name``, its module imported."""
    found = cli.get_command(click.Context(cli), name)
    assert found is not None, name
    return found


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(sys.argv[1:] if argv is None else [str(a) for a in argv])
        finally:
            sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's last flush
    except (
        BrokenPipeError
    ):  # stdout closed early (stream-kt inspect --json | head -1): stop quietly, as a killed pipe writer does
        os.dup2(
            os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()
        )  # nothing left to flush into the closed pipe at exit
        return 128 + signal.SIGPIPE


def _run(args: list[str]) -> int:
    name = args[0] if args and args[0] in COMMANDS else None
    try:
        with cli.make_context("stream-kt", args) as ctx:
            return int(cli.invoke(ctx) or 0)
    except click.exceptions.Exit as exc:  # --help, or a command that exits on purpose
        raise SystemExit(exc.exit_code) from None
    except click.UsageError as exc:
        command = exc.ctx.info_name if exc.ctx is not None and exc.ctx.parent is not None else name or "stream-kt"
        print(
            f"stream-kt {command}: error: {exc.format_message()}".replace("stream-kt stream-kt", "stream-kt"),
            file=sys.stderr,
        )
        return 2
    except StreamKTError as exc:
        print(f"stream-kt {name or ''}: error: {exc}".replace(" :", ":"), file=sys.stderr)
        return 2
    except (KeyboardInterrupt, click.Abort):
        print(f"stream-kt {name or ''}: interrupted".replace("  ", " "), file=sys.stderr)
        return 130


def run() -> None:
    """The ``stream-kt`` program: ``main``, then exit with its status.

    ``gc.freeze()`` first: the interpreter's last collection would otherwise walk every
    object torch made, about a second on a busy 2-core machine, after the command is done
    (a SIGTERM to ``serve`` is answered that much sooner).
    """
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
