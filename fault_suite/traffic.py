"""The suite's two Kafka clients: the sender (input topic) and the collector (output and dead-letter topics).

The sender records where every message landed (topic/partition/offset, from its
delivery report), so a dead letter's ``source`` header names the message it came
from.  The collector reads both topics from the beginning without a group (it never
joins or disturbs the processors' group) and keeps every record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_kt.service import kafka_io

from .workload import Message

# aiokafka logs every refused connection while a broker is down: the suite reports outages itself
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@dataclass
class Sent:
    message: Message
    source: str  # "topic/partition/offset"


class Sender:
    """Sends plan messages in order, acks=all, each chunk's deliveries awaited before the next chunk.

    When ``send`` returns nothing is in flight: the broker can then be stopped without a
    half-delivered produce that a retry might write twice.
    """

    def __init__(self, bootstrap: str, topic: str, chunk: int = 20) -> None:
        self.bootstrap, self.topic, self.chunk = bootstrap, topic, chunk
        self.sent: list[Sent] = []
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # 8 MiB: the giant poison events (5 MB) must go in; the input topic takes them (run.INPUT_TOPIC_CONFIG)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2, max_request_size=8 << 20, request_timeout_ms=30_000)
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def send(self, messages: list[Message], rate_per_s: float | None) -> None:
        """Send in order, at most ``rate_per_s`` (None: as fast as deliveries come back)."""
        assert self.producer is not None
        started, count = time.monotonic(), 0
        for start in range(0, len(messages), self.chunk):
            chunk = messages[start : start + self.chunk]
            deliveries = [await self.producer.send(self.topic, m.value, key=m.key) for m in chunk]
            for m, report in zip(chunk, await asyncio.gather(*deliveries)):
                self.sent.append(Sent(m, f"{report.topic}/{report.partition}/{report.offset}"))
            count += len(chunk)
            ahead_s = count / rate_per_s - (time.monotonic() - started) if rate_per_s else 0.0
            if ahead_s > 0:
                await asyncio.sleep(ahead_s)


@dataclass
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    offset: int


@dataclass
class Collector:
    """Every record of the output and dead-letter topics, from the beginning (the topics exist: ``ensure_topics`` ran)."""

    bootstrap: str
    out_topic: str
    dlq_topic: str
    outputs: list[tuple[bytes | None, bytes | None, int, int]] = field(default_factory=list)  # (key, value, partition, offset)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    errors: int = 0
    indexed: tuple[int, int] = (0, 0)  # (outputs, dead letters) a Tally has taken in
    _task: asyncio.Task | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = kafka_io.make_reader(
            self.bootstrap,
            [self.out_topic, self.dlq_topic],
            fetch_max_wait_ms=50,  # outputs seen soon after they are produced: faults are timed by them
            max_partition_fetch_bytes=4 * 1024 * 1024,  # dead letters may be huge
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            except KafkaError:  # the broker is restarting: the consumer reconnects and keeps its positions
                self.errors += 1
                await asyncio.sleep(0.5)
                continue
            for tp, records in batches.items():
                for r in records:
                    if tp.topic == self.out_topic:
                        self.outputs.append((r.key, r.value, tp.partition, r.offset))
                    else:
                        headers = {k: v.decode("utf-8", "replace") for k, v in (r.headers or ())}
                        self.dead_letters.append(DeadLetter(r.key, r.value, headers, r.offset))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
