"""follow_outputs on a real broker: outputs we write ourselves, with a duplicate, a stale output and a dead letter."""

from __future__ import annotations

import asyncio
import time

import msgpack
import numpy as np
import pytest

from stream_kt.service import kafka_io
from stream_kt.service.events import MasteryEncoder
from stream_kt.tools.follow import FollowTally, follow_outputs, now_ms


def mastery(student_id: str, seq: int, ts_ms: int, format: str = "v2") -> bytes:
    """One mastery message as serve writes it, in either format (the follower reads both)."""
    encoder = MasteryEncoder("dkt-test", format)
    return encoder.encode(
        [student_id],
        [seq],
        [f"{student_id}#{seq - 1}"],
        [ts_ms],
        ["3"],
        [0.7],
        np.array([[0.5, 0.6, 0.7, 0.8]], np.float32),
    )[0]


async def produce(bootstrap: str, messages: list[tuple[str, bytes, list[tuple[str, bytes]] | None]]) -> None:
    producer = kafka_io.make_tool_producer(bootstrap)
    await producer.start()
    try:
        for topic, value, headers in messages:
            await producer.send_and_wait(topic, value, key=b"k", headers=headers)
    finally:
        await producer.stop()


@pytest.mark.brokers("kafka", "tansu")
def test_follow_counts_each_answer_once_ignores_earlier_runs_and_times_out_on_what_is_missing(broker, topics) -> None:
    out_topic, dlq_topic = topics("mastery"), topics("dlq")
    since_ms = now_ms()
    sent_ms = since_ms + 5
    bad_event = msgpack.packb({"v": 1, "student_id": "a", "skill_id": "999", "correct": 1, "ts": sent_ms})
    dead_letter_headers = [("reason", b"unknown_item"), ("detail", b"999"), ("source", b"answers/0/7")]
    asyncio.run(
        produce(
            broker.bootstrap,
            [
                (out_topic, mastery("a", 1, sent_ms), None),
                (out_topic, mastery("a", 2, sent_ms, "v1"), None),
                (out_topic, mastery("a", 2, sent_ms), None),  # repeated after a crash: dropped
                (out_topic, mastery("b", 1, sent_ms, "v1"), None),
                (out_topic, mastery("old", 1, since_ms - 60_000), None),  # an earlier run's output
                (dlq_topic, bad_event, dead_letter_headers),
                (dlq_topic, bad_event, dead_letter_headers),  # same source offset: dropped
            ],
        )
    )
    # 5 expected, 4 answered: the follower reads everything, then gives up after the timeout
    tally = FollowTally(since_ms=since_ms, expected=5)
    started = time.monotonic()
    asyncio.run(follow_outputs(broker.bootstrap, out_topic, tally, dlq_topic=dlq_topic, timeout_s=1.5))
    assert 1.5 <= time.monotonic() - started < 15
    assert (tally.outputs, dict(tally.dead_lettered), tally.duplicates, tally.stale) == (3, {"unknown_item": 1}, 2, 1)
    assert not tally.complete()
    summary = tally.summary(first_send_ms=sent_ms)
    assert (summary["sent"], summary["outputs"], summary["dead_lettered"], summary["missing"]) == (5, 3, 1, 1)
    assert len(tally.latencies_ms) == 3 and all(0 <= latency < 15_000 for latency in tally.latencies_ms)
    # the processor's part ends at the output's Kafka timestamp, before the follower received it
    assert len(tally.processed_ms) == 3
    assert all(part <= whole for part, whole in zip(tally.processed_ms, tally.latencies_ms, strict=True))
    assert summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]


def test_follow_stops_as_soon_as_every_event_is_answered(broker, topics) -> None:
    out_topic = topics("mastery")
    tally = FollowTally(since_ms=now_ms(), expected=1)

    async def run() -> None:
        follower = asyncio.create_task(follow_outputs(broker.bootstrap, out_topic, tally, timeout_s=60))
        await produce(broker.bootstrap, [(out_topic, mastery("a", 1, now_ms()), None)])
        await asyncio.wait_for(follower, 15)

    asyncio.run(run())
    assert tally.complete() and tally.outputs == 1


@pytest.mark.brokers("kafka", "tansu")
def test_follow_from_the_end_never_reads_what_was_produced_before_it(broker, topics) -> None:
    out_topic = topics("mastery")
    asyncio.run(
        produce(broker.bootstrap, [(out_topic, mastery(f"old{n}", 1, now_ms()), None) for n in range(5)])
    )  # an earlier run's outputs
    time.sleep(0.01)
    tally = FollowTally(since_ms=now_ms(), expected=2)

    async def run() -> None:
        positioned = asyncio.Event()
        follower = asyncio.create_task(
            follow_outputs(broker.bootstrap, out_topic, tally, timeout_s=60, from_end=True, positioned=positioned)
        )
        await asyncio.wait_for(positioned.wait(), 15)
        await produce(
            broker.bootstrap,
            [(out_topic, mastery("a", 1, now_ms()), None), (out_topic, mastery("b", 1, now_ms()), None)],
        )
        await asyncio.wait_for(follower, 15)

    asyncio.run(run())
    assert (tally.outputs, tally.stale, tally.duplicates) == (
        2,
        0,
        0,
    )  # the 5 earlier outputs were skipped, not read and dropped
