"""export: the answers the brokers still retain, as a training file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from stream_kt.commands.common import json_option
from stream_kt.commands.settings_flags import settings_from_options, settings_options
from stream_kt.errors import ConfigError
from stream_kt.settings import KAFKA_SECURITY
from stream_kt.tools.export import parse_time_ms, run_export


@click.command(
    help="write the answers the input topic still retains as a training file (format csv), for stream-kt train"
)
@click.option(
    "--out", required=True, metavar="FILE.csv", help="file to write (student_id,item_id,correct,ts_ms,elapsed_ms)"
)
@click.option("--topic", help="topic to read (default: the input topic: KT_IN_TOPIC, else kt.answers)")
@click.option(
    "--since",
    metavar="TIME",
    help="keep answers with ts at or after TIME: ISO-8601 date or time (UTC unless it has an offset) or ms since epoch",
)
@click.option("--until", metavar="TIME", help="keep answers with ts before TIME")
@json_option
@settings_options("bootstrap", "max_event_bytes", *KAFKA_SECURITY)
def export(out: str, topic: str | None, since: str | None, until: str | None, as_json: bool, **options: Any) -> int:
    settings = settings_from_options(options)
    if settings.bootstrap == "embedded":
        raise ConfigError("export needs the bootstrap HOST:PORT of the broker that holds the answers, not 'embedded'")
    since_ms = parse_time_ms(since, "--since") if since is not None else None
    until_ms = parse_time_ms(until, "--until") if until is not None else None
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise ConfigError(f"--since {since} is not before --until {until}: no answer could be kept")
    parent = Path(out).resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: directory {parent} does not exist")
    if Path(out).is_dir():
        raise ConfigError(f"--out {out}: is a directory")
    result = run_export(settings, topic or settings.in_topic, out, since_ms, until_ms)
    print(result.line())
    if as_json:
        print(
            json.dumps(
                {
                    "out": str(result.path),
                    "answers": result.answers,
                    "students": result.students,
                    "duplicates": result.duplicates,
                    "invalid": sum(result.invalid.values()),
                    "invalid_reasons": result.invalid,
                    "outside": result.outside,
                    "partitions": result.partitions,
                    "records": result.records,
                }
            )
        )
    return 0


COMMANDS = (export,)
