"""Traffic for the tools, the tests and the fault suite: messages sent in order, topics read from the beginning.

* ``send_in_order``: (key, value) pairs to a topic in their order, a chunk's deliveries
  awaited before the next chunk goes (so when it returns nothing is in flight), at most
  ``rate_per_s``; the delivery reports say where each one landed.
* ``TopicReader``: every record of some topics from the beginning, with no group (it
  never joins or disturbs a processor's group), read in the foreground (``read``,
  ``read_until``) or by a task of its own (``read_in_background``).

Both take their clients from the Kafka adapter (``kafka_io.make_tool_producer``,
``kafka_io.make_reader``), the one place any Kafka client is made.  ``replay`` has its own
paced, pipelined sender of students' answers; ``follow`` reads with a ``TopicReader``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from stream_kt.service import kafka_io
from stream_kt.tools.processes import until

Message = tuple[bytes | None, bytes | None]  # (key, value)


async def send_in_order(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Sequence[Message],
    *,
    chunk: int = 1000,
    rate_per_s: float | None = None,
    on_delivered: Callable[[Sequence[Message], list[RecordMetadata]], None] | None = None,
) -> list[RecordMetadata]:
    """Send ``messages`` in order, ``chunk`` at a time, at most ``rate_per_s`` (None: as fast as deliveries come back).

    ``on_delivered(chunk, reports)`` after each chunk: what a caller must know even if a later chunk fails.
    """
    started, reports = time.monotonic(), []
    for start in range(0, len(messages), chunk):
        part = messages[start : start + chunk]
        deliveries = [await producer.send(topic, value, key=key) for key, value in part]
        delivered = list(await asyncio.gather(*deliveries))
        reports += delivered
        if on_delivered is not None:
            on_delivered(part, delivered)
        ahead_s = len(reports) / rate_per_s - (time.monotonic() - started) if rate_per_s else 0.0
        if ahead_s > 0:
            await asyncio.sleep(ahead_s)
    return reports


class TopicReader:
    """Every record of ``topics`` (one or a list) from the beginning, with no group; ``records`` keeps them
    (unless ``keep`` is False).

    ``options`` are aiokafka's consumer options (``kafka_io.make_reader``).  Usable as an
    async context manager.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: str | list[str],
        security: dict[str, Any] | None = None,
        *,
        keep: bool = True,
        **options: object,
    ) -> None:
        self.bootstrap, self.topics, self.keep = bootstrap, [topics] if isinstance(topics, str) else list(topics), keep
        self.consumer = kafka_io.make_reader(bootstrap, self.topics, security, **options)
        self.records: list[ConsumerRecord] = []
        self.errors = 0  # reads that failed in the background (a broker restarting)
        self._task: asyncio.Task | None = None

    async def start(self) -> TopicReader:
        await kafka_io.start(self.consumer, self.bootstrap)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.consumer.stop()

    async def __aenter__(self) -> TopicReader:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def read(self, timeout_ms: int = 100, max_records: int | None = None) -> list[ConsumerRecord]:
        """One fetch: the records that arrived (none after ``timeout_ms`` without any)."""
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        new = [record for records in batches.values() for record in records]
        if self.keep:
            self.records.extend(new)
        return new

    async def read_until(
        self, done: Callable[[list[ConsumerRecord]], bool], timeout_s: float = 60.0
    ) -> list[ConsumerRecord]:
        """Read until ``done(records)``; ``StreamError`` after ``timeout_s``."""

        async def read_done() -> bool:
            if done(self.records):
                return True
            await self.read()
            return False

        await until(
            read_done,
            timeout_s,
            lambda: f"{', '.join(self.topics)}: condition met ({len(self.records)} records)",
            poll_s=0,
        )
        return self.records

    def read_in_background(
        self, on_records: Callable[[list[ConsumerRecord]], None], timeout_ms: int = 200, max_records: int = 5000
    ) -> None:
        """Read until ``stop``, handing each fetch to ``on_records``; a failed fetch (the broker restarting) is
        counted and retried: the consumer reconnects and keeps its positions."""

        async def forever() -> None:
            while True:
                try:
                    new = await self.read(timeout_ms, max_records)
                except KafkaError:
                    self.errors += 1
                    await asyncio.sleep(0.5)
                    continue
                on_records(new)

        self._task = asyncio.create_task(forever())
