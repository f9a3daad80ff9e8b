"""``stream-kt audit``: what in a data set leaks an answer into its own prediction or misleads an
evaluation (``data.audit``)."""

from __future__ import annotations

import json
import sys

import click

from stream_kt.commands.common import POSITIVE_INT, format_option, item_option, json_option
from stream_kt.data.audit import RepeatRule, audit
from stream_kt.training.prepare import detect_format

UNIT = click.FloatRange(0.0, 1.0)


@click.command(
    "audit",
    help="check a data set for leaks (multi-skill repeats) and what misleads an evaluation: duplicates, "
    "answers out of order, short students, constant labels",
)
@click.argument("data")
@format_option
@item_option
@click.option("--strict", is_flag=True, help="exit 1, with a one-line summary on stderr, when a leak is found")
@click.option(
    "--min-count",
    type=POSITIVE_INT,
    default=RepeatRule.min_count,
    show_default=True,
    help="adjacent answers an item pair needs (in each order) before its agreement counts",
)
@click.option(
    "--min-agreement",
    type=UNIT,
    default=RepeatRule.min_agreement,
    show_default=True,
    help="a pair of items whose adjacent answers agree this often in both orders is a mixed-order repeat",
)
@click.option(
    "--copy-agreement",
    type=UNIT,
    default=RepeatRule.copy_agreement,
    show_default=True,
    help="a pair agreeing this often in one order (wrong answers included) is a fixed-order repeat",
)
@click.option(
    "--min-length", type=POSITIVE_INT, default=3, show_default=True, help="a student with fewer answers is short"
)
@click.option("--examples", type=POSITIVE_INT, default=3, show_default=True, help="examples shown per finding")
@json_option
def audit_command(
    data: str,
    fmt: str,
    item: str,
    strict: bool,
    min_count: int,
    min_agreement: float,
    copy_agreement: float,
    min_length: int,
    examples: int,
    as_json: bool,
) -> int:
    rule = RepeatRule(min_count=min_count, min_agreement=min_agreement, copy_agreement=copy_agreement)
    report = audit(data, detect_format(data) if fmt == "auto" else fmt, item, rule, min_length, examples)
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        print("\n".join(report.lines()))
    if strict and report.leaks:
        print(
            f"stream-kt audit: leak in {data}: " + "; ".join(f"{f.check}: {f.summary}" for f in report.leaks),
            file=sys.stderr,
        )
        return 1
    return 0


COMMANDS = (audit_command,)
