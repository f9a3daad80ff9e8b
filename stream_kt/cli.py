"""``stream-kt`` command line: one parser, commands registered by their modules.

A ``StreamKTError`` (bad file, bad argument, bad checkpoint) becomes one line on stderr
and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from stream_kt.errors import StreamKTError


def build_parser() -> argparse.ArgumentParser:
    from stream_kt.commands import admin, bench, broker, compare, distill, offline, serve, tools

    parser = argparse.ArgumentParser(prog="stream-kt", description="Streaming knowledge tracing.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    offline.add_parsers(sub)
    distill.add_parsers(sub)
    compare.add_parsers(sub)
    tools.add_parsers(sub)
    serve.add_parsers(sub)
    admin.add_parsers(sub)
    broker.add_parsers(sub)
    bench.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StreamKTError as exc:
        print(f"stream-kt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stream-kt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
