"""A second, independent client (librdkafka, through confluent-kafka) on both sides of the processor.

Events produced by the C client with the Java client's key partitioner reach the
processor, and the mastery messages it writes are read back by a C consumer group:
the wire formats and the partitioning are those of any Kafka client, not aiokafka's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer

from stream_kt.checkpoint import load_checkpoint
from stream_kt.service.events import decode_mastery
from stream_kt.service.kafka_io import ensure_topics

from .conftest import assert_final_states, by_student, reference_run, running_processor, synthetic_answers


def produce_with_librdkafka(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    # murmur2_random: the Java client's (and aiokafka's) partitioner, so a student keeps one partition whoever produces
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "acks": "all", "linger.ms": 5}
    )
    failures: list[str] = []
    for key, value in messages:
        producer.produce(topic, value, key, on_delivery=lambda err, msg: failures.append(str(err)) if err else None)
        producer.poll(0)
    assert producer.flush(30) == 0, "librdkafka did not deliver everything within 30 s"
    assert not failures, failures[:3]


def consume_with_librdkafka(bootstrap: str, topic: str, group: str, count: int, timeout_s: float = 60.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count:
            assert time.monotonic() < deadline, (
                f"librdkafka read {len(records)} of {count} records within {timeout_s} s"
            )
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            records.append(message)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return records


@pytest.mark.brokers("kafka", "tansu")
def test_a_librdkafka_producer_and_consumer_group_interoperate_with_the_processor(
    make_settings, tiny_checkpoint: Path, redis_url
) -> None:
    settings = make_settings()
    checkpoint = load_checkpoint(tiny_checkpoint)
    answers = synthetic_answers(checkpoint, students=6, seed=3, min_length=20, max_length=40)
    asyncio.run(
        ensure_topics(
            settings.bootstrap, [settings.in_topic, settings.out_topic, settings.dlq_topic], settings.partitions
        )
    )
    produce_with_librdkafka(
        settings.bootstrap, settings.in_topic, [(a.student_id.encode(), a.encode()) for a in answers]
    )

    async def serve_until_answered() -> None:
        async with running_processor(settings, checkpoint) as stats:
            await asyncio.to_thread(
                lambda: outputs.extend(
                    consume_with_librdkafka(
                        settings.bootstrap, settings.out_topic, settings.group_id + "-reader", len(answers)
                    )
                )
            )
        assert stats[0].events_in == len(answers)

    outputs: list = []
    asyncio.run(serve_until_answered())

    # each output is keyed by its student and sits on the partition the Java partitioner gives that key
    by_key: dict[str, set[int]] = {}
    for record in outputs:
        by_key.setdefault(record.key().decode(), set()).add(record.partition())
    assert set(by_key) == set(by_student(answers)) and all(len(p) == 1 for p in by_key.values())

    # the values are the reference model's, in each student's order
    messages: dict[str, list[dict]] = {}
    for record in outputs:
        message = decode_mastery(record.value())
        messages.setdefault(message["student_id"], []).append(message)
    for student, seq in by_student(answers).items():
        expected = reference_run(checkpoint, seq)
        got = messages[student]
        assert [m["seq"] for m in got] == list(range(1, len(seq) + 1))
        np.testing.assert_allclose([m["p_correct"] for m in got], expected.p_correct, atol=1e-5)
        np.testing.assert_allclose(got[-1]["mastery"], expected.mastery[-1], atol=1e-5)
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)
