"""``stream-kt forget STUDENT``: erase one student's state from Redis (right to erasure).

A student's whole state is one key (``keys.student_key``), so erasing it is one DEL.
That is not the whole erasure: the student's answer events stay in the input topic
until its retention deletes them, and a replay (a consumer-group rewind, a new group,
a restore) would rebuild the state from them; the mastery and dead-letter topics hold
the student's outputs until their retention too.  Erasure must therefore also cover
those topics' retention (or compaction with tombstones keyed by the student id), and
events the student sends after ``forget`` start a new state from the model's initial one.
"""

from __future__ import annotations

import argparse
import asyncio

from stream_kt.settings import StreamSettings, add_settings_arguments, mask_url, settings_from_args
from stream_kt.service import keys
from stream_kt.service.redis_store import StudentStore

ERASURE_NOTE = """\
Only the state in Redis is erased. The student's answer events stay in the input topic
(and outputs in the mastery and dead-letter topics) until their retention deletes them;
replaying the input topic (a group rewind, a new group) would rebuild the state. A complete
erasure must also cover those topics' retention. New events of the student start a fresh state."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forget",
        help="erase one student's state from Redis (right to erasure; see --help for Kafka retention)",
        description="Erase one student's state from Redis.",
        epilog=ERASURE_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("student", help="student id, as in the events")
    add_settings_arguments(p, ("redis_url", "key_prefix", "redis_cluster"))
    p.set_defaults(func=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    key = keys.student_key(args.student, settings.key_prefix)
    deleted = asyncio.run(forget(settings, args.student))
    where = mask_url(settings.redis_url)
    if deleted:
        print(f"forgot student {args.student}: deleted {key} on {where}")
    else:
        print(f"no state for student {args.student} ({key} on {where}): nothing to delete")
    print("note: events still in the input topic's retention would rebuild the state if replayed")
    return 0


async def forget(settings: StreamSettings, student_id: str) -> bool:
    """Delete ``student_id``'s state; True when there was one."""
    store = await StudentStore.from_settings(settings, attempts=2)
    try:
        return await store.delete(student_id)
    finally:
        await store.close()
