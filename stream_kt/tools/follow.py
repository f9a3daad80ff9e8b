"""Follow the output (and dead-letter) topic until every replayed event is answered.

A fresh reader with no group (``traffic.TopicReader``) reads both topics from the beginning, so it needs no
offsets of its own and never disturbs the processor's group.  Outputs are counted once
per (student_id, seq) (the processor may repeat outputs after a crash), dead letters
once per source offset, and latency is receive time minus the event's ``ts`` (the
replayer stamps ``ts`` with the wall clock when it sends the event).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack
import numpy as np

from stream_kt.settings import StreamSettings
from stream_kt.tools.traffic import TopicReader

# Without any handler, Python's last-resort handler prints aiokafka's connection errors
# next to our one-line error; a configured root logger still receives them.
logging.getLogger("aiokafka").addHandler(logging.NullHandler())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def percentiles_ms(values: list[int]) -> dict[str, float | None]:
    """p50, p95 and p99 of millisecond ``values``, to 0.1 ms (None each where there are none)."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1)}


@dataclass
class FollowTally:
    """What the follower has seen so far; the replayer sets ``expected`` once it has sent everything."""

    since_ms: int  # outputs of events stamped before this come from an earlier run: ignored
    expected: int | None = None
    outputs: int = 0
    duplicates: int = 0
    stale: int = 0
    dead_lettered: Counter = field(default_factory=Counter)  # reason -> count
    latencies_ms: list[int] = field(default_factory=list)
    processed_ms: list[int] = field(default_factory=list)  # the output's Kafka timestamp - ts: the processor's part
    first_output_ms: int | None = None
    last_output_ms: int | None = None
    first_produced_ms: int | None = None  # the outputs' Kafka timestamps (see add_output)
    last_produced_ms: int | None = None
    _seen_outputs: set[tuple[str, int]] = field(default_factory=set, repr=False)
    _seen_dead_letters: set[str] = field(default_factory=set, repr=False)

    @property
    def answered(self) -> int:
        return self.outputs + sum(self.dead_lettered.values())

    def complete(self) -> bool:
        return self.expected is not None and self.answered >= self.expected

    def add_output(self, raw: bytes | None, received_ms: int, produced_ms: int | None = None) -> None:
        """Count one mastery message (either version: only its ids and ``ts`` are read); ``produced_ms``: its
        Kafka timestamp, when serve produced it, which times the processor whether or not this reader keeps up."""
        try:
            message = msgpack.unpackb(raw, raw=False) if raw else None
        except Exception:  # not a mastery message: some other producer's, not ours to count
            message = None
        if not isinstance(message, dict):
            message = {}
        ts, seq = message.get("ts"), message.get("seq")
        if not isinstance(ts, int) or not isinstance(seq, int) or ts < self.since_ms:
            self.stale += 1
            return
        key = (str(message.get("student_id")), seq)
        if key in self._seen_outputs:
            self.duplicates += 1
            return
        self._seen_outputs.add(key)
        self.outputs += 1
        self.latencies_ms.append(received_ms - ts)
        self._stamp(received_ms)
        if produced_ms is not None:
            self.processed_ms.append(produced_ms - ts)
            self.first_produced_ms = (
                produced_ms if self.first_produced_ms is None else min(self.first_produced_ms, produced_ms)
            )
            self.last_produced_ms = (
                produced_ms if self.last_produced_ms is None else max(self.last_produced_ms, produced_ms)
            )

    def add_dead_letter(self, raw_event: bytes | None, headers: dict[str, str], received_ms: int) -> None:
        try:
            ts = msgpack.unpackb(raw_event, raw=False).get("ts") if raw_event else None
        except Exception:  # a dead letter may be any bytes at all; ours are always msgpack maps
            ts = None
        if not isinstance(ts, int) or ts < self.since_ms:
            self.stale += 1
            return
        source = headers.get("source", "")
        if source and source in self._seen_dead_letters:
            self.duplicates += 1
            return
        self._seen_dead_letters.add(source)
        self.dead_lettered[headers.get("reason", "unknown")] += 1
        self._stamp(received_ms)

    def _stamp(self, received_ms: int) -> None:
        if self.first_output_ms is None:
            self.first_output_ms = received_ms
        self.last_output_ms = received_ms

    def latency_percentiles_ms(self) -> dict[str, float | None]:
        return percentiles_ms(self.latencies_ms)

    def summary(self, first_send_ms: int) -> dict:
        """The end-to-end report: rates from the first send to the last answer."""
        expected = self.expected or 0
        span_s = ((self.last_output_ms or first_send_ms) - first_send_ms) / 1000
        return {
            "sent": expected,
            "outputs": self.outputs,
            "dead_lettered": sum(self.dead_lettered.values()),
            "dead_letter_reasons": dict(self.dead_lettered),
            "duplicates": self.duplicates,
            "stale": self.stale,
            "missing": max(0, expected - self.answered),
            "events_per_s": round(self.answered / span_s, 1) if span_s > 0 else None,
            **self.latency_percentiles_ms(),
        }


async def _skip_to_end(consumer, wait_s: float = 10.0) -> None:
    """Seek every assigned partition to its end (``offsets_for_times`` would do, but the embedded
    broker ignores the time)."""
    deadline = time.monotonic() + wait_s
    while not consumer.assignment() and time.monotonic() < deadline:  # the first metadata refresh assigns them
        await asyncio.sleep(0.05)
    owned = list(consumer.assignment())
    if owned:  # else the topics do not exist yet: nothing earlier to skip
        ends = await consumer.end_offsets(owned)
        for tp in owned:
            consumer.seek(tp, ends[tp])


async def follow_outputs(
    bootstrap: str,
    out_topic: str,
    tally: FollowTally,
    *,
    dlq_topic: str | None = None,
    timeout_s: float = 300.0,
    on_update: Callable[[FollowTally], None] | None = None,
    poll_ms: int = 200,
    fetch_wait_ms: int = StreamSettings.model_fields["fetch_wait_ms"].default,
    security: dict | None = None,
    from_end: bool = False,
    positioned: asyncio.Event | None = None,
) -> FollowTally:
    """Consume until ``tally.complete()`` or ``timeout_s`` after ``tally.expected`` is set.

    The timeout only starts once the sender is done, so a long replay is never cut short;
    the caller cancels this task if sending fails.  ``from_end``: each partition starts at
    its end, not its beginning, so earlier runs' outputs are not read at all; ``positioned``
    is set once the follower is in place (send nothing before: its outputs could be
    skipped).
    """
    reader = TopicReader(
        bootstrap,
        [out_topic] + ([dlq_topic] if dlq_topic else []),
        security,
        keep=False,  # counted in the tally, not kept
        metadata_max_age_ms=2000,  # notice the topics soon when the processor creates them late
        # the default 500 ms would be measured as latency on the embedded broker (StreamSettings.fetch_wait_ms)
        fetch_max_wait_ms=fetch_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await reader.start()
    try:
        if from_end:
            await _skip_to_end(reader.consumer)
        if positioned is not None:
            positioned.set()
        deadline: float | None = None
        while not tally.complete():
            if deadline is None and tally.expected is not None:
                deadline = time.monotonic() + timeout_s
            if deadline is not None and time.monotonic() > deadline:
                break
            records = await reader.read(timeout_ms=poll_ms, max_records=10_000)
            received_ms = now_ms()
            for record in records:
                if record.topic == out_topic:
                    tally.add_output(record.value, received_ms, record.timestamp)
                else:
                    headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}
                    tally.add_dead_letter(record.value, headers, received_ms)
            if on_update is not None:
                on_update(tally)
    finally:
        await reader.stop()
    return tally
