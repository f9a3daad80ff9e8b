"""Replay a data set into the input topic as concurrent students answering.

Each student's interactions go out in their own order; students are interleaved as
concurrent sessions: by timestamp where every student has ``ts_ms``, else by a seeded
random interleaving (``event_order``, pure and deterministic).  Every event is stamped
with the wall clock when it is sent (so event-to-mastery latency can be measured) and
named ``"<student_id>#<index>"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiokafka.errors import KafkaError

from stream_kt.data.sequences import StudentSequence
from stream_kt.errors import DataError
from stream_kt.progress import progress_bar
from stream_kt.service import kafka_io
from stream_kt.service.events import encode_answer
from stream_kt.service.exceptions import StreamError
from stream_kt.settings import StreamSettings
from stream_kt.tools.follow import FollowTally, follow_outputs, now_ms
from stream_kt.training.prepare import load_students

BURST_MS = 20.0  # default: paced traffic goes out in bursts of this many ms of events

ITEM_FIELDS = {"skill_id": "skill_id", "problem_id": "item_id"}  # --item -> the event's item field


def event_order(students: Sequence[StudentSequence], seed: int) -> list[tuple[int, int]]:
    """The send order as (student index, position) pairs; each student's positions ascend.

    When every student has timestamps the order is by timestamp (ties: student index),
    else a seeded uniform interleaving: all students are in session at once.
    """
    if all(s.ts_ms is not None for s in students):
        # heapq.merge pops from each student's head, so a student's order survives even
        # where its own timestamps go backwards
        per_student = (
            [(ts, index, position) for position, ts in enumerate(s.ts_ms)]  # type: ignore[arg-type]
            for index, s in enumerate(students)
        )
        return [(index, position) for _, index, position in heapq.merge(*per_student)]
    lengths = np.array([len(s) for s in students], dtype=np.int64)
    owners = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(students)), lengths))
    # the k-th appearance of a student in the shuffled sequence sends its k-th interaction
    by_owner = np.argsort(owners, kind="stable")
    positions = np.empty_like(owners)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    positions[by_owner] = np.arange(len(owners)) - np.repeat(starts, lengths)
    return list(zip(owners.tolist(), positions.tolist()))


def load_replay_students(
    paths: Sequence[str | Path], fmt: str = "auto", item: str = "skill_id"
) -> list[StudentSequence]:
    """Students of all ``paths``; an id in two files is an error (3-line ids carry the file stem)."""
    students: list[StudentSequence] = []
    source_of: dict[str, str] = {}
    for path in paths:
        for student in load_students(path, fmt, item):
            if student.student_id in source_of:
                raise DataError(
                    f"student {student.student_id!r} is in both {source_of[student.student_id]} and "
                    f"{path}: pass each file once"
                )
            source_of[student.student_id] = str(path)
            students.append(student)
    return students


class TokenBucket:
    """At most ``rate_per_s`` tokens a second on average, bursts up to ``capacity``."""

    def __init__(self, rate_per_s: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.clock = clock
        self.tokens = capacity
        self.updated = clock()

    def wait_s(self, count: int) -> float:
        """Take ``count`` tokens (count <= capacity); return how long to sleep before using them."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        self.tokens -= count  # may go negative: the debt is the wait
        return max(0.0, -self.tokens / self.rate_per_s)


@dataclass(frozen=True)
class ReplayResult:
    sent: int
    students: int
    first_send_ms: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def send_events(
    bootstrap: str,
    topic: str,
    students: Sequence[StudentSequence],
    order: Sequence[tuple[int, int]],
    *,
    item: str = "skill_id",
    rate_per_s: float | None = None,
    burst_ms: float = BURST_MS,
    progress: bool = True,
    on_sent: Callable[[int], None] | None = None,
    chunk_size: int = 2000,
    security: dict | None = None,
) -> ReplayResult:
    """Send ``order``'s events; futures are awaited a chunk behind, so sends pipeline.

    With ``rate_per_s``, events go out in bursts of ``burst_ms`` worth of traffic, each
    burst one record batch per partition: longer bursts make fewer, larger batches.
    ``security``: ``kafka_io.client_options(settings)`` (TLS, SASL); None: PLAINTEXT.
    """
    item_field = ITEM_FIELDS[item]
    bucket = None
    if rate_per_s:
        capacity = max(1.0, rate_per_s * burst_ms / 1000)
        bucket = TokenBucket(rate_per_s, capacity)
        chunk_size = int(capacity)
    producer = kafka_io.make_tool_producer(
        bootstrap, security, linger_ms=5, max_batch_size=512 * 1024, request_timeout_ms=30_000
    )
    await kafka_io.start(producer, bootstrap)
    keys = [s.student_id.encode() for s in students]
    started = time.perf_counter()
    first_send_ms = now_ms()
    in_flight: list[asyncio.Future] = []
    bar = progress_bar(
        total=len(order), desc="replay", unit="event", unit_scale=True, disable=not progress, mininterval=0.5
    )
    try:
        for start in range(0, len(order), chunk_size):
            chunk = order[start : start + chunk_size]
            if bucket is not None:
                await asyncio.sleep(bucket.wait_s(len(chunk)))
            futures = []
            for index, position in chunk:
                student = students[index]
                elapsed_ms = student.elapsed_ms[position] if student.elapsed_ms is not None else None
                question = student.questions[position] or None if student.questions is not None else None
                raw = encode_answer(
                    student.student_id,
                    student.items[position],
                    student.correct[position],
                    now_ms(),
                    f"{student.student_id}#{position}",
                    item_field,
                    elapsed_ms,
                    question,
                )
                futures.append(await producer.send(topic, raw, key=keys[index]))
            await _delivered(in_flight)  # the previous chunk: one chunk stays in flight while this one fills
            in_flight = futures
            bar.update(len(chunk))
            if on_sent is not None:
                on_sent(start)  # every event before this chunk is acknowledged
        await _delivered(in_flight)
        if on_sent is not None:
            on_sent(len(order))
    except KafkaError as exc:
        raise StreamError(f"sending to {topic!r} on {bootstrap} failed: {type(exc).__name__}: {exc}") from None
    finally:
        bar.close()
        await producer.stop()
    return ReplayResult(len(order), len({i for i, _ in order}), first_send_ms, time.perf_counter() - started)


async def _delivered(futures: list[asyncio.Future]) -> None:
    if futures:
        await asyncio.gather(*futures)


async def replay_and_follow(
    settings: StreamSettings,
    students: Sequence[StudentSequence],
    order: Sequence[tuple[int, int]],
    *,
    item: str,
    rate_per_s: float | None,
    follow: bool,
    burst_ms: float = BURST_MS,
    timeout_s: float,
    progress: bool = True,
) -> tuple[ReplayResult, FollowTally | None]:
    """Send ``order``; with ``follow``, consume the answers at the same time (a late consumer would inflate latency)."""
    security = kafka_io.client_options(settings)
    async with kafka_io.connecting(
        settings.bootstrap, settings.kafka_connect_timeout_s
    ):  # an address that is not Kafka's: one line, soon
        await kafka_io.check_reachable(settings.bootstrap, security)
        await kafka_io.ensure_topics(settings.bootstrap, [settings.in_topic], settings.partitions, security=security)
    if not follow:
        return await send_events(
            settings.bootstrap,
            settings.in_topic,
            students,
            order,
            item=item,
            rate_per_s=rate_per_s,
            burst_ms=burst_ms,
            progress=progress,
            security=security,
        ), None
    tally = FollowTally(since_ms=now_ms())
    answered_bar = progress_bar(
        total=len(order),
        desc="answered",
        unit="event",
        unit_scale=True,
        position=1,
        disable=not progress,
        mininterval=0.5,
    )
    sent_count = [0]

    def show(current: FollowTally) -> None:
        answered_bar.update(current.answered - answered_bar.n)
        answered_bar.set_postfix(lag=sent_count[0] - current.answered, refresh=False)

    def on_sent(count: int) -> None:
        sent_count[0] = count

    follower = asyncio.create_task(
        follow_outputs(
            settings.bootstrap,
            settings.out_topic,
            tally,
            dlq_topic=settings.dlq_topic,
            timeout_s=timeout_s,
            on_update=show,
            fetch_wait_ms=settings.fetch_wait_ms,
            security=security,
        )
    )
    try:
        result = await send_events(
            settings.bootstrap,
            settings.in_topic,
            students,
            order,
            item=item,
            rate_per_s=rate_per_s,
            burst_ms=burst_ms,
            progress=progress,
            on_sent=on_sent,
            security=security,
        )
        tally.expected = result.sent
        await follower
    finally:
        if not follower.done():
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        answered_bar.close()
    return result, tally
