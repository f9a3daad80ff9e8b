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

import asyncio
from typing import Any

import click

from stream_kt.service import keys
from stream_kt.service.redis_store import StudentStore
from stream_kt.settings import StreamSettings, mask_url, settings_from_options, settings_options

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


COMMANDS = (forget_command,)
