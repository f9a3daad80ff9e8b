"""A consumer far behind on a partition of many small record batches catches up.

The embedded broker (tansu 0.6) scans a partition's batches on every fetch and, once a
scan outlasts the fetch wait, answers with a single batch.  With the old 5 ms fetch
wait, a consumer 10,000 one-record batches behind read about one record per fetch and
the full ASSISTments replay stalled at ~230,000 events.  The processor's consumer
(``make_consumer``, with the default ``fetch_wait_ms``) must read such a backlog in a
few large fetches.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import ConsumerRebalanceListener

from stream_kt.service.kafka_io import ensure_topics, make_consumer, make_tool_producer
from stream_kt.settings import StreamSettings

BATCHES = 10_000


class NoOpListener(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        pass


async def fill(bootstrap: str, topic: str) -> None:
    producer = make_tool_producer(bootstrap, linger_ms=0)
    await producer.start()
    try:
        for start in range(0, BATCHES, 500):
            deliveries = []
            for i in range(start, start + 500):
                batch = producer.create_batch()
                batch.append(key=None, value=b"%d" % i, timestamp=None)
                deliveries.append(await producer.send_batch(batch, topic, partition=0))
            await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def read_backlog(settings: StreamSettings, deadline_s: float) -> tuple[list[int], int]:
    consumer = make_consumer(settings, NoOpListener())
    await consumer.start()
    values: list[int] = []
    polls = 0
    try:
        deadline = time.monotonic() + deadline_s
        while len(values) < BATCHES and time.monotonic() < deadline:
            records = await consumer.getmany(timeout_ms=1000)
            polls += 1
            values += [int(r.value) for batch in records.values() for r in batch]
    finally:
        await consumer.stop()
    return values, polls


@pytest.mark.brokers("kafka", "tansu")
def test_consumer_catches_up_on_many_small_batches(broker) -> None:
    topic = f"test-catch-up-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker.bootstrap, [topic], partitions=1))
    asyncio.run(fill(broker.bootstrap, topic))
    settings = StreamSettings(bootstrap=broker.bootstrap, in_topic=topic, group_id=f"catch-up-{uuid.uuid4().hex[:8]}")

    values, polls = asyncio.run(read_backlog(settings, deadline_s=120))

    assert values == list(range(BATCHES)), f"read {len(values)} of {BATCHES} records in {polls} polls"
    # one fetch per batch would be ~10,000 polls; a working catch-up takes a handful
    assert polls < 200, f"{polls} polls for {BATCHES} one-record batches"
