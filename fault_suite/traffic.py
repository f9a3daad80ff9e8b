"""The suite's two Kafka clients: the sender (input topic) and the collector (output and dead-letter topics),
on the tools' traffic helpers (``stream_kt.tools.traffic``).

The sender records where every message landed (topic/partition/offset, from its
delivery report), so a dead letter's ``source`` header names the message it came
from.  The collector reads both topics from the beginning without a group (it never
joins or disturbs the processors' group) and keeps every record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from stream_kt.service import kafka_io
from stream_kt.tools.traffic import TopicReader, send_in_order

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
        self.producer = kafka_io.make_tool_producer(
            self.bootstrap, acks="all", linger_ms=2, max_request_size=8 << 20, request_timeout_ms=30_000
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def send(self, messages: list[Message], rate_per_s: float | None) -> None:
        """Send in order, at most ``rate_per_s`` (None: as fast as deliveries come back)."""
        assert self.producer is not None
        delivered = 0

        def record(chunk: Sequence, reports: list) -> None:
            nonlocal delivered
            for m, report in zip(messages[delivered : delivered + len(chunk)], reports):
                self.sent.append(Sent(m, f"{report.topic}/{report.partition}/{report.offset}"))
            delivered += len(chunk)

        await send_in_order(
            self.producer,
            self.topic,
            [(m.key, m.value) for m in messages],
            chunk=self.chunk,
            rate_per_s=rate_per_s,
            on_delivered=record,
        )


@dataclass
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    offset: int


@dataclass
class Collector:
    """Every record of the output and dead-letter topics, from the beginning (the topics
    exist: ``ensure_topics`` ran)."""

    bootstrap: str
    out_topic: str
    dlq_topic: str
    outputs: list[tuple[bytes | None, bytes | None, int, int]] = field(
        default_factory=list
    )  # (key, value, partition, offset)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    indexed: tuple[int, int] = (0, 0)  # (outputs, dead letters) a Tally has taken in
    _reader: TopicReader | None = None

    @property
    def errors(self) -> int:
        """Fetches that failed (the broker restarting): the reader reconnects and keeps its positions."""
        return self._reader.errors if self._reader is not None else 0

    async def start(self) -> None:
        self._reader = TopicReader(
            self.bootstrap,
            [self.out_topic, self.dlq_topic],
            keep=False,  # sorted into outputs and dead letters here
            fetch_max_wait_ms=50,  # outputs seen soon after they are produced: faults are timed by them
            max_partition_fetch_bytes=4 * 1024 * 1024,  # dead letters may be huge
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await self._reader.start()
        self._reader.read_in_background(self._take)

    def _take(self, records: list) -> None:
        for r in records:
            if r.topic == self.out_topic:
                self.outputs.append((r.key, r.value, r.partition, r.offset))
            else:
                headers = {k: v.decode("utf-8", "replace") for k, v in (r.headers or ())}
                self.dead_letters.append(DeadLetter(r.key, r.value, headers, r.offset))

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
