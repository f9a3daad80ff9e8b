"""The fuzzer (``fault_suite.fuzz``) through the real decoder and processor, on real Redis.

Each example is a batch of fuzzed messages that goes through the processor's own steps
2 (decode), 3-5 (read states, step the model, build outputs and state blobs) and 7
(the fenced state write).  Every message must be answered (one output naming its
student and event) or dead-lettered with the reason the decoder gives, and nothing may
raise.  The quick profile runs in every test run; ``test_fuzz_10000_examples`` is the
long one (``-m slow``).  On Kafka, ``test_fuzzed_stream_on_kafka`` checks that the
batches they sit in commit, and the fault suite mixes the same generator in as its
``fuzz`` class.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import redis
from aiokafka.structs import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fault_suite.fuzz import fuzz_message
from stream_kt.backends import make_backend
from stream_kt.checkpoint import Checkpoint, load_checkpoint
from stream_kt.service.events import PROCESSING_ERROR, REASONS, decode_answer, decode_mastery
from stream_kt.service.exceptions import InvalidEvent
from stream_kt.service.kafka_io import MAX_DETAIL_CHARS
from stream_kt.service.processor import Processor, RebalanceGate, bucket_sizes
from stream_kt.service.redis_store import StudentStore
from stream_kt.settings import StreamSettings

TOPIC = "fuzz.answers"
OFFSETS = itertools.count()  # one offset sequence for every example: nothing is ever skipped as a replay


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Checkpoint:
    return load_checkpoint(tiny_checkpoint)


def oracle(raw: bytes | None, checkpoint: Checkpoint) -> tuple[str, str, object] | str:
    """(student, item, event id) of a valid message, or the decoder's reason."""
    try:
        event = decode_answer(raw, checkpoint.vocab.index)
    except InvalidEvent as exc:
        return exc.reason
    return (event.student_id, event.item_id, event.event_id)


def records_of(messages: list[bytes | None], partitions: int) -> dict[TopicPartition, list[ConsumerRecord]]:
    records: dict[TopicPartition, list[ConsumerRecord]] = {}
    for n, value in enumerate(messages):
        tp = TopicPartition(TOPIC, n % partitions)
        key = f"k{n}".encode()
        records.setdefault(tp, []).append(
            ConsumerRecord(TOPIC, tp.partition, next(OFFSETS), 0, 0, key, value, None, len(key), len(value or b""), ())
        )
    return records


class Harness:
    """One processor (its steps 2-7 need no Kafka client) on real Redis, and the event loop it
    runs on, for every example."""

    def __init__(self, checkpoint: Checkpoint, redis_url: str, key_prefix: str) -> None:
        self.loop = asyncio.new_event_loop()
        settings = StreamSettings(redis_url=redis_url, key_prefix=key_prefix, batch_size=64)
        self.store = self.loop.run_until_complete(StudentStore.from_settings(settings))
        backends = {size: make_backend("eager", checkpoint.model, size) for size in bucket_sizes(settings.batch_size)}
        self.processor = Processor(  # type: ignore[arg-type]
            settings, checkpoint, backends, None, None, self.store, RebalanceGate(asyncio.Event())
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(checkpoint: Checkpoint, redis_url: str) -> Iterator[Harness]:
    prefix = f"test-fuzz-{uuid.uuid4().hex[:12]}"
    made = Harness(checkpoint, redis_url, prefix)
    yield made
    made.close()
    client = redis.Redis.from_url(redis_url)
    doomed = list(client.scan_iter(f"{prefix}:*", count=1000))
    if doomed:
        client.delete(*doomed)
    client.close()


def run_batch(harness: Harness, checkpoint: Checkpoint, messages: list[bytes | None]) -> None:
    harness.loop.run_until_complete(check_batch(harness, checkpoint, messages))


async def check_batch(harness: Harness, checkpoint: Checkpoint, messages: list[bytes | None]) -> None:
    """Steps 2, 3-5 and 7 of the processor over ``messages``, checked against the decoder's verdicts."""
    processor = harness.processor
    records = records_of(messages, partitions=3)
    valid, dead_letters = processor.decode(records)  # 2
    applied = await processor.apply(valid, list(records))  # 3, 4, 5
    await harness.store.write_blobs(*applied.writes)  # 7

    by_offset = {r.offset: r for rs in records.values() for r in rs}
    verdicts = {offset: oracle(record.value, checkpoint) for offset, record in by_offset.items()}
    lettered = {}
    for reason, key, value, headers in dead_letters:
        header = dict(headers)
        offset = int(header["source"].decode().rsplit("/", 1)[1])
        assert reason in (*REASONS, PROCESSING_ERROR) and header["reason"].decode() == reason
        assert header["detail"] and len(header["detail"].decode()) <= MAX_DETAIL_CHARS
        assert (key, value) == (by_offset[offset].key, by_offset[offset].value)  # the original, unchanged
        lettered[offset] = reason
    answered = set(valid.offsets)
    assert answered.isdisjoint(lettered) and answered | set(lettered) == set(by_offset)  # each message once
    for offset, reason in lettered.items():
        assert verdicts[offset] == reason, f"offset {offset}: dead letter {reason}, the decoder says {verdicts[offset]}"
    outputs = [decode_mastery(raw) for raw in applied.outputs.values]
    assert len(outputs) == len(answered) and not applied.replays
    expected = sorted((verdicts[o] for o in answered), key=repr)
    assert sorted(((m["student_id"], m["item_id"], m["event_id"]) for m in outputs), key=repr) == expected
    for message in outputs:
        assert 0.0 <= message["p_correct"] <= 1.0 and all(math.isfinite(p) for p in message["mastery"])


def fuzz_batch(seed: int, size: int, checkpoint: Checkpoint) -> list[bytes | None]:
    rng = random.Random(seed)
    return [fuzz_message(rng, n, checkpoint.vocab.ids) for n in range(size)]


QUICK = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
LONG = settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@QUICK
@given(seed=st.integers(0, 2**32), size=st.integers(1, 40))
def test_fuzzed_batches_are_answered_or_dead_lettered_never_raise(seed, size, checkpoint, harness):
    run_batch(harness, checkpoint, fuzz_batch(seed, size, checkpoint))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 10,000 batches: about 2 to 5 minutes on two cores
@LONG
@given(seed=st.integers(0, 2**32), size=st.integers(1, 16))
def test_fuzz_10000_examples(seed, size, checkpoint, harness):
    run_batch(harness, checkpoint, fuzz_batch(seed, size, checkpoint))


def test_the_generator_covers_what_the_fuzzer_promises(checkpoint):
    """Over a few thousand messages: valid answers, every decoder reason a map can earn, and the edge values."""
    messages = fuzz_batch(7, 3000, checkpoint)
    verdicts = [oracle(m, checkpoint) for m in messages]
    reasons = {v for v in verdicts if isinstance(v, str)}
    assert {
        "not_msgpack",
        "not_a_map",
        "bad_version",
        "missing_field",
        "bad_type",
        "bad_correct",
        "out_of_range",
        "unknown_item",
    } <= reasons
    assert 200 < sum(not isinstance(v, str) for v in verdicts) < 2000
    unpacked = [msgpack.unpackb(m, strict_map_key=False) for m in messages if m and m[:1] != b"\xc1" and _unpacks(m)]
    values = [v for event in unpacked if isinstance(event, dict) for v in event.values()]
    assert any(v == 2**64 - 1 for v in values if type(v) is int) and any(
        v == -(2**63) for v in values if type(v) is int
    )
    assert any(isinstance(v, float) and math.isnan(v) for v in values) and any(v is True for v in values)
    assert (
        any(isinstance(v, dict) for v in values)
        and any(isinstance(v, list) for v in values)
        and any(isinstance(v, bytes) for v in values)
    )


def _unpacks(raw: bytes) -> bool:
    try:
        msgpack.unpackb(raw, strict_map_key=False)
    except Exception:
        return False
    return True
