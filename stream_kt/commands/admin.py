"""``stream-kt forget STUDENT``: erase one student's state from Redis (right to erasure);
``stream-kt quality``: the served models' online quality, read from Redis.

A student's whole state is one key (``keys.student_key``), so erasing it is one DEL.
That is not the whole erasure: the student's answer events stay in the input topic
until its retention deletes them, and a replay (a consumer-group rewind, a new group,
a restore) would rebuild the state from them; the mastery and dead-letter topics hold
the student's outputs until their retention too.  Erasure must therefore also cover
those topics' retention (or compaction with tombstones keyed by the student id), and
events the student sends after ``forget`` start a new state from the model's initial one.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import click

from stream_kt.commands.settings_flags import settings_from_options, settings_options
from stream_kt.service import keys
from stream_kt.service.quality import finite
from stream_kt.service.redis_store import StudentStore
from stream_kt.settings import StreamSettings, mask_url
from stream_kt.tools.inspect_state import online_quality

ERASURE_NOTE = """\
Only the state in Redis is erased. The student's answer events stay in the input topic
(and outputs in the mastery and dead-letter topics) until their retention deletes them;
replaying the input topic (a group rewind, a new group) would rebuild the state. A complete
erasure must also cover those topics' retention. New events of the student start a fresh state."""


@click.command(
    "forget",
    help=f"Erase one student's state from Redis (right to erasure).\n\n\b\n{ERASURE_NOTE}",
    short_help="erase one student's state from Redis (right to erasure; see --help for Kafka retention)",
)
@click.argument("student")
@settings_options("redis_url", "key_prefix", "redis_cluster")
def forget_command(student: str, **options: Any) -> int:
    settings = settings_from_options(options)
    key = keys.student_key(student, settings.key_prefix)
    deleted = asyncio.run(forget(settings, student))
    where = mask_url(settings.redis_url)
    if deleted:
        print(f"forgot student {student}: deleted {key} on {where}")
    else:
        print(f"no state for student {student} ({key} on {where}): nothing to delete")
    print("note: events still in the input topic's retention would rebuild the state if replayed")
    return 0


async def forget(settings: StreamSettings, student_id: str) -> bool:
    """Delete ``student_id``'s state; True when there was one."""
    store = await StudentStore.from_settings(settings, attempts=2)
    try:
        return await store.delete(student_id)
    finally:
        await store.close()


@click.command(
    "quality",
    short_help="online model quality from the stream: AUC, log-loss, RMSE, accuracy per model version",
    help="Online model quality: every served answer's p_correct (made before the answer) scored against the answer, "
    "added up by every processor in Redis. A student's first answer is not scored (as in `evaluate`). "
    "AUC comes from 10,000 score bins; its bound against the exact AUC is shown.",
)
@click.option("--watch", is_flag=True, help="refresh every --interval-s seconds until Ctrl-C")
@click.option("--interval-s", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="with --watch")
@click.option("--json", "as_json", is_flag=True, help="one JSON object (a line per refresh with --watch)")
@settings_options("redis_url", "key_prefix", "redis_cluster")
def quality_command(watch: bool, interval_s: float, as_json: bool, **options: Any) -> int:
    settings = settings_from_options(options)
    while True:
        summaries = {version: scores.summary() for version, scores in asyncio.run(online_quality(settings)).items()}
        if as_json:
            print(json.dumps({"versions": finite(summaries)}, sort_keys=True), flush=True)
        else:
            print(quality_table(summaries, mask_url(settings.redis_url)), flush=True)
        if not watch:
            return 0
        time.sleep(interval_s)


def quality_table(summaries: dict[str, dict[str, Any]], where: str) -> str:
    """The versions' figures, then their calibration (mean prediction / observed rate per decile)."""
    if not summaries:
        return f"no online quality on {where} yet (serve scores answers as it applies them)"

    def f(value: float | None, digits: int = 4) -> str:
        return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

    lines = [
        f"online quality on {where}",
        f"{'model version':<24} {'scored':>10} {'AUC':>7} {'(±)':>7} {'log-loss':>8} {'RMSE':>7} {'accuracy':>8}",
    ]
    for version, s in summaries.items():
        lines.append(
            f"{version:<24} {s['count']:>10,} {f(s['auc']):>7} {f(s['auc_error_bound']):>7} {f(s['logloss']):>8} "
            f"{f(s['rmse']):>7} {f(s['accuracy']):>8}"
        )
    lines.append("calibration: mean p_correct / observed correct rate (answers) per decile of p_correct")
    for version, s in summaries.items():
        cells = [
            f"{c['bin']} {f(c['mean_p'], 2)}/{f(c['observed'], 2)} ({c['count']})"
            for c in s["calibration"]
            if c["count"]
        ]
        lines.append(f"  {version}: " + ", ".join(cells))
    return "\n".join(lines)


COMMANDS = (forget_command, quality_command)
