"""Kafka's half of high availability: on a three-node cluster, the node leading the busiest input partition is
SIGKILLed mid-stream while events keep coming, and restarted later on its own log directory.  Every output
arrives, the group commits to the end, every state equals the reference run; the pause is measured."""

from __future__ import annotations

import asyncio
import time

import pytest

from stream_kt.checkpoint import load_checkpoint
from stream_kt.service.kafka_io import make_tool_producer
from stream_kt.settings import StreamSettings
from stream_kt.tools.brokers import KafkaCluster
from stream_kt.tools.traffic import TopicReader, send_in_order

from .conftest import (
    answer_messages,
    assert_final_states,
    committed_offsets,
    dedupe_outputs,
    expected_output_keys,
    produce,
    running_processor,
    synthetic_answers,
    test_settings,
    until,
    until_committed,
)


async def send_more(settings: StreamSettings, messages: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """As ``produce``, to topics that exist: what an application's producer does while a node is down."""
    producer = make_tool_producer(settings.bootstrap, acks="all")
    await producer.start()
    try:
        end: dict[int, int] = {}
        for report in await send_in_order(producer, settings.in_topic, messages):
            end[report.partition] = max(end.get(report.partition, 0), report.offset + 1)
        return end
    finally:
        await producer.stop()


@pytest.fixture
def cluster_settings(kafka_cluster: KafkaCluster, redis_url: str, key_prefix: str, topics) -> StreamSettings:
    """As ``make_settings``, on the three-node cluster; topics get the defaults: three replicas, two in sync."""
    return test_settings(kafka_cluster.bootstrap, redis_url, key_prefix, topics)


def test_a_killed_partition_leader_loses_no_output_and_no_event(
    kafka_cluster: KafkaCluster, cluster_settings: StreamSettings, tiny_checkpoint, redis_url, key_prefix
):
    settings, cluster = cluster_settings, kafka_cluster
    checkpoint = load_checkpoint(tiny_checkpoint)
    answers = synthetic_answers(checkpoint, students=24, seed=27)
    messages = answer_messages(answers)
    before, after = messages[: len(messages) // 3], messages[len(messages) // 3 :]
    expected = expected_output_keys(answers)

    async def scenario() -> tuple[int, float, int, int]:
        arrivals: list[float] = []  # when each output record was read
        ends = await produce(settings, before)  # creates the topics: three replicas, min.insync.replicas 2
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            out.read_in_background(lambda new: arrivals.extend([time.monotonic()] * len(new)))
            async with running_processor(settings, checkpoint) as stats:
                await until(
                    lambda: len(arrivals) >= len(before) // 2, 60, lambda: f"outputs before the kill ({len(arrivals)})"
                )
                busiest = max(ends, key=lambda p: ends[p])
                leader = await asyncio.to_thread(cluster.leader, settings.in_topic, busiest)
                killed_at = time.monotonic()
                await asyncio.to_thread(cluster.kill, leader)
                try:
                    for partition, end in (
                        await send_more(settings, after)
                    ).items():  # acks=all: two replicas of three suffice
                        ends[partition] = max(ends.get(partition, 0), end)
                    await until(
                        lambda: set(dedupe_outputs(out.records)) >= expected,
                        120,
                        lambda: f"every output ({len(dedupe_outputs(out.records))} of {len(expected)})",
                    )
                    complete_at = time.monotonic()
                    assert await asyncio.to_thread(cluster.leader, settings.in_topic, busiest) not in (leader, -1)
                finally:
                    await asyncio.to_thread(cluster.restart, leader)  # on its own log directory
                await until_committed(settings, len(answers), 60)
            assert dedupe_outputs(out.records).keys() == expected
            assert await committed_offsets(settings) == ends  # committed to the end of every partition, nothing beyond
            after_kill = [killed_at] + sorted(t for t in arrivals if killed_at < t <= complete_at)
            pause_s = max(b - a for a, b in zip(after_kill, after_kill[1:]))
            return leader, pause_s, len(out.records) - len(expected), stats[0].skipped_replays

    leader, pause_s, repeats, skipped = asyncio.run(scenario())
    assert_final_states(redis_url, key_prefix, checkpoint, answers)
    print(
        f"\nnode {leader} (leader of the busiest input partition) SIGKILLed: longest time with no new output "
        f"{pause_s:.1f} s; {skipped} events replayed and skipped, {repeats} outputs repeated, none lost"
    )
