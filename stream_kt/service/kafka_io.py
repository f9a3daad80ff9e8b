"""Thin adapter over aiokafka, the one place any stream-kt code makes a Kafka client.

Topics (``ensure_topics``), the processor's consumer and producer, the tools' producer
and group-less reader, starting any of them (``start``: an unreachable broker is one
line), the bound on a start-up's first contacts (``connecting``: an address that is not
a Kafka broker's is one line too, after ``kafka_connect_timeout_s``), dead-letter headers.
Every client gets the same security options (``client_options``): TLS and SASL from the
``kafka_*`` settings.  Nothing here decides when to commit; ``processor.py`` owns the
commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from stream_kt.errors import ConfigError
from stream_kt.service.exceptions import StreamError
from stream_kt.settings import ENV, StreamSettings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


def source(topic: str, partition: int) -> str:
    """Where events come from, as ``StudentState.offsets`` keys it: "topic/partition"."""
    return f"{topic}/{partition}"


MAX_DETAIL_CHARS = 300  # a dead letter's detail header: what was wrong, never a copy of the event


def dead_letter_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """``source`` ("topic/partition/offset") identifies the event: a dead letter sent again after a
    crash or a retry repeats it."""
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
    return [
        ("reason", reason.encode()),
        ("detail", detail.encode(errors="replace")),
        ("source", f"{source(topic, partition)}/{offset}".encode()),
    ]


PRODUCER_MAX_REQUEST_BYTES = 1_048_576  # aiokafka's max_request_size, which make_producer keeps
KAFKA_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's default message.max.bytes (a topic's max.message.bytes)
RECORD_OVERHEAD_BYTES = 512  # record batch and record framing, varints, header names: what a limit keeps free


def dead_letter(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """A dead letter that fits in ``limit_bytes`` (the smallest of the producer's and the topic's limits).

    The original key and bytes when they fit; otherwise the value becomes a prefix of
    the original, and headers say so: ``truncated: true``, ``original_size`` (bytes) and
    ``sha256`` (hex, of the whole original value), so the event stays identifiable.
    """
    header_bytes = sum(len(name) + len(data) for name, data in headers)
    room = limit_bytes - RECORD_OVERHEAD_BYTES - header_bytes - len(key or b"")
    if value is None or len(value) <= room:
        return key, value, headers
    marks = [
        ("truncated", b"true"),
        ("original_size", str(len(value)).encode()),
        ("sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    room -= sum(len(name) + len(data) for name, data in marks)
    return key, value[: max(0, room)], headers + marks


def permanent(exc: BaseException) -> bool:
    """A Kafka error that retrying cannot fix (a record too large, no authorization, an invalid topic)?"""
    return (
        isinstance(exc, KafkaError)
        and not getattr(exc, "retriable", False)
        and not isinstance(exc, (KafkaConnectionError, KafkaTimeoutError))
    )


async def topic_message_limit(bootstrap: str, topic: str, security: dict[str, Any] | None = None) -> int:
    """The largest record ``topic`` accepts: its ``max.message.bytes``, or Kafka's default
    where the broker will not say."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    try:
        await admin.start()
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:  # (name, value, read_only, ...) of each config entry
                    if entry[0] == "max.message.bytes" and entry[1] is not None:
                        return int(entry[1])
    except (KafkaError, ValueError, IndexError, TypeError) as exc:  # the embedded broker has no DescribeConfigs
        log.info(
            "topic %s: max.message.bytes unknown (%s); assuming Kafka's default %d",
            topic,
            type(exc).__name__,
            KAFKA_MAX_MESSAGE_BYTES,
        )
    finally:
        await admin.close()
    return KAFKA_MAX_MESSAGE_BYTES


def message_key(student_id: str) -> bytes:
    """Kafka key of every message about a student: its id, UTF-8 (one partition per student keeps order)."""
    return student_id.encode()


def client_options(settings: StreamSettings) -> dict[str, Any]:
    """Security keyword arguments for any aiokafka client; a missing or bad CA file is a ``ConfigError``."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        cafile = settings.kafka_ssl_cafile or None
        if cafile and not Path(cafile).is_file():
            raise ConfigError(f"kafka ssl cafile {cafile}: no such file")
        try:
            options["ssl_context"] = create_ssl_context(cafile=cafile)
        except ssl.SSLError as exc:
            raise ConfigError(f"kafka ssl cafile {cafile}: not a PEM CA bundle ({exc.reason})") from None
    if protocol.startswith("SASL_"):
        # aiokafka takes SCRAM credentials through the sasl_plain_* arguments too
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return options


def replication(brokers: int, replication_factor: int = 0, min_insync_replicas: int = 0) -> tuple[int, int]:
    """The (replication factor, min.insync.replicas) of topics created on a cluster of ``brokers`` live brokers.

    0 means the default: three replicas where the cluster has three brokers or more (else
    one per broker), and two of them in sync for a write (one with fewer than three
    replicas: with two, a write needing both would stop at the first broker lost).
    """
    factor = replication_factor or max(1, min(3, brokers))
    return factor, min_insync_replicas or max(1, min(2, factor - 1))


async def ensure_topics(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    attempts: int = 5,
    first_delay_s: float = 0.25,
    *,
    security: dict[str, Any] | None = None,
    configs: dict[str, str] | None = None,
    replication_factor: int = 0,
    min_insync_replicas: int = 0,
) -> None:
    """Create missing topics with ``partitions`` partitions; an existing topic is left as it is.

    Replicas: ``replication(brokers in the cluster, replication_factor, min_insync_replicas)``
    (0: three replicas, two in sync, on a cluster of three or more; one on a single broker).
    ``min.insync.replicas`` is set on a topic of more than one replica.  A factor larger than
    the cluster is the broker's error, one line.

    This is the first contact with the broker, so it retries a bounded number of times
    and then raises ``StreamError`` (the CLI prints one line).  ``security`` is
    ``client_options(settings)``; without it the connection is PLAINTEXT.
    """
    delay_s = first_delay_s
    for attempt in range(1, attempts + 1):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
        try:
            await admin.start()
            missing = [t for t in topics if t not in set(await admin.list_topics())]
            if not missing:
                # no CreateTopics: a request the client sends to one broker it takes for the controller,
                # maybe one just lost
                return
            brokers = len((await admin.describe_cluster()).get("brokers") or ())
            factor, min_isr = replication(brokers, replication_factor, min_insync_replicas)
            topic_configs = {**({"min.insync.replicas": str(min_isr)} if factor > 1 else {}), **(configs or {})}
            response = await admin.create_topics(
                [NewTopic(t, partitions, factor, topic_configs=topic_configs) for t in missing]
            )
        except (
            KafkaError,
            TimeoutError,
        ) as exc:  # TimeoutError: a request to a broker that died after the metadata named it
            log.warning("broker %s: attempt %d/%d failed: %s", bootstrap, attempt, attempts, exc or type(exc).__name__)
            if attempt == attempts:
                raise StreamError(
                    f"cannot reach the Kafka broker at {bootstrap}: {exc or type(exc).__name__}"
                ) from None
            await asyncio.sleep(delay_s)
            delay_s *= 2
            continue
        finally:
            await admin.close()
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise StreamError(
                    f"cannot create topic {topic!r} on {bootstrap} ({partitions} partitions, {factor} replicas, "
                    f"{brokers} brokers): error {code} ({message})"
                )
            if code == 0:
                log.info(
                    "created topic %s with %d partitions, %d replicas (min.insync.replicas %d)",
                    topic,
                    partitions,
                    factor,
                    min_isr if factor > 1 else 1,
                )
        return


def topic_options(settings: StreamSettings) -> dict[str, Any]:
    """``ensure_topics``' keyword arguments from the settings: security and replication."""
    return {
        "security": client_options(settings),
        "replication_factor": settings.replication_factor,
        "min_insync_replicas": settings.min_insync_replicas,
    }


async def check_reachable(bootstrap: str, security: dict[str, Any] | None = None) -> None:
    """One connection, no retries: a tool's first contact, so a broker that is not there fails in one line at once."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    try:
        await start(admin, bootstrap)
    finally:
        await admin.close()


def make_consumer(settings: StreamSettings, listener: ConsumerRebalanceListener) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=settings.group_id,
        enable_auto_commit=False,  # processor.py commits, after the state write
        auto_offset_reset="earliest",  # a new group starts at the beginning: no event is skipped
        fetch_max_wait_ms=settings.fetch_wait_ms,  # see StreamSettings.fetch_wait_ms
        session_timeout_ms=6_000,  # Kafka's minimum: a crashed member's partitions move on sooner
        heartbeat_interval_ms=2_000,
        **client_options(settings),
    )
    consumer.subscribe([settings.in_topic], listener=listener)
    return consumer


def make_producer(settings: StreamSettings) -> AIOKafkaProducer:
    """The processor's producer: a send is acknowledged once every in-sync replica has it (``acks="all"``,
    at least ``min.insync.replicas`` of them), so a leader lost after the ack loses nothing.

    Not idempotent: the embedded broker (tansu 0.6) answers InitProducerId with an error, so
    ``enable_idempotence`` would stop serve there.  A repeat (the client's retry of a send whose ack
    was lost with a leader, a replayed batch) has the same (student_id, seq) and values; consumers drop it.
    """
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        **client_options(settings),
    )


def make_tool_producer(bootstrap: str, security: dict[str, Any] | None = None, **options: object) -> AIOKafkaProducer:
    """A producer for the tools (replay, the benchmarks' load): ``options`` are aiokafka's."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **(security or {}), **options)


def make_reader(
    bootstrap: str, topics: list[str], security: dict[str, Any] | None = None, **options: object
) -> AIOKafkaConsumer:
    """A consumer of every partition of ``topics`` from the beginning, with no group: it commits
    nothing and never disturbs a processor's group.  (A subscription, not ``assign``: Kafka only
    returns metadata for the topics a client tracks.  Its metadata is refreshed every 2 s, so a
    topic created just before, whose partitions the first refresh may miss, is read soon.)"""
    options = {"metadata_max_age_ms": 2000, **options}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(security or {}),
        **options,
    )
    consumer.subscribe(topics)
    return consumer


async def start(client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient, bootstrap: str) -> None:
    """``client.start()``; a broker that cannot be reached or refuses us is one line."""
    try:
        await client.start()
    except KafkaConnectionError:
        raise StreamError(
            f"cannot reach Kafka at {bootstrap} (start one: `stream-kt broker`, or pass --bootstrap HOST:PORT)"
        ) from None
    except KafkaError as exc:
        raise StreamError(
            f"cannot start a Kafka {type(client).__name__} on {bootstrap}: {type(exc).__name__}: {exc}"
        ) from None


@contextlib.asynccontextmanager
async def connecting(bootstrap: str, timeout_s: float) -> AsyncIterator[None]:
    """Bound a start-up's contacts with Kafka (topics, clients starting) to ``timeout_s`` in all.

    A refused connection fails sooner (``ensure_topics``, ``start``); this catches the rest:
    an address where something accepts the connection but never answers as Kafka does (another
    service's port, a firewall that drops packets), which aiokafka would wait out for 40 s per
    request and ``ensure_topics`` five times over.  Past ``timeout_s``, ``StreamError`` (one line).
    The body's clients must be closed by whoever made them (``finally``, an exit stack): the
    timeout cancels whatever it was waiting for.
    """
    log.info(
        "connecting to Kafka at %s (giving up after %g s, %s)", bootstrap, timeout_s, ENV["kafka_connect_timeout_s"]
    )
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            yield
    except TimeoutError:
        if not deadline.expired():
            raise
        raise StreamError(
            f"cannot reach the Kafka broker at {bootstrap}: no Kafka answer within {timeout_s:g} s "
            f"(is that a Kafka broker's address? {ENV['kafka_connect_timeout_s']} sets the wait)"
        ) from None


_partitioner = DefaultPartitioner()  # murmur2 of the key, as the Java client: a student keeps its partition


def partition_of(key: bytes, partitions: list[int]) -> int:
    """The partition the Java client (and aiokafka) gives ``key``: murmur2, so a student keeps one partition."""
    return int(_partitioner(key, partitions, partitions))


async def send_keyed(
    producer: AIOKafkaProducer, topic: str, keys: list[bytes], values: list[bytes], partitions: list[int]
) -> list[asyncio.Future[Any]]:
    """Send messages, ``partitions`` given (``partition_of``), as record batches per partition; the delivery futures.

    Each partition's messages keep their order, as ``producer.send`` one by one would, at
    a fraction of its cost: one future per record batch, not per message.
    """
    by_partition: dict[int, list[int]] = {}
    for i, partition in enumerate(partitions):
        by_partition.setdefault(partition, []).append(i)
    deliveries = []
    for partition, indexes in by_partition.items():
        batch = producer.create_batch()
        for i in indexes:
            if batch.append(key=keys[i], value=values[i], timestamp=None) is None:  # full: send it, start the next
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=keys[i], value=values[i], timestamp=None)
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    return deliveries


async def read_to_end(
    bootstrap: str,
    topic: str,
    on_records: Callable[[int, list[ConsumerRecord[Any, Any]]], None],
    security: dict[str, Any] | None = None,
    *,
    on_start: Callable[[int], None] | None = None,
    stall_timeout_s: float = 60.0,
    **options: object,
) -> dict[int, int]:
    """Read every partition of ``topic`` from its first retained offset to its end offset as
    it is when the read starts, then stop: records produced meanwhile are not read.

    No group: nothing is committed and no processor's group is disturbed.  Each
    partition's records reach ``on_records(partition, records)`` in offset order;
    ``on_start(total)`` is told how many offsets lie between the starts and the ends
    first (a compacted or transactional topic holds fewer records).  Returns the
    records read per partition.  A topic that does not exist, or a read that makes no
    progress for ``stall_timeout_s``, is a ``StreamError``.
    """
    options = {"metadata_max_age_ms": 2000, **options}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(security or {}),
        **options,
    )
    try:
        await start(consumer, bootstrap)
        try:
            if topic not in await consumer.topics():
                raise StreamError(f"no topic {topic!r} on {bootstrap}")
            consumer.subscribe(
                [topic]
            )  # with no group: every partition, once the metadata names them (see make_reader)
            deadline = time.monotonic() + stall_timeout_s
            while not consumer.assignment():
                if time.monotonic() > deadline:
                    raise StreamError(f"no partitions of {topic!r} on {bootstrap} after {stall_timeout_s:.0f} s")
                await asyncio.sleep(0.05)
            partitions = sorted(consumer.assignment(), key=lambda tp: tp.partition)
            firsts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
        except KafkaError as exc:
            raise StreamError(
                f"cannot read the offsets of {topic!r} on {bootstrap}: {type(exc).__name__}: {exc}"
            ) from None
        for tp in partitions:
            consumer.seek(tp, firsts[tp])
        if on_start is not None:
            on_start(sum(ends[tp] - firsts[tp] for tp in partitions))
        read = {tp.partition: 0 for tp in partitions}
        pending = [tp for tp in partitions if firsts[tp] < ends[tp]]
        consumer.pause(*[tp for tp in partitions if tp not in pending])
        progressed = time.monotonic()
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                records = [r for r in records if r.offset < ends[tp]]
                if records:
                    on_records(tp.partition, records)
                    read[tp.partition] += len(records)
                    progressed = time.monotonic()
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.remove(tp)
                    consumer.pause(tp)
            if pending and time.monotonic() - progressed > stall_timeout_s:
                positions = [await consumer.position(tp) for tp in pending]
                behind = ", ".join(
                    f"{tp.partition} at {position} of {ends[tp]}" for tp, position in zip(pending, positions)
                )
                raise StreamError(
                    f"reading {topic!r} on {bootstrap} made no progress for "
                    f"{stall_timeout_s:.0f} s (partitions {behind})"
                )
    finally:
        await consumer.stop()
    return read


# ---------------------------------------------------------------------- for the tools and the tests:
# a group's progress, a broker's readiness


async def committed_offsets(
    bootstrap: str, group_id: str, topic: str, partitions: list[int], security: dict[str, Any] | None = None
) -> dict[int, int]:
    """``group_id``'s committed offset on each of ``partitions`` of ``topic`` (those without one left out).

    The consumer asks the group's coordinator and never subscribes: it joins nothing and
    disturbs no member.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False, **(security or {})
    )
    await consumer.start()
    try:
        committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await consumer.stop()
    return {p: offset for p, offset in committed.items() if offset is not None}


async def partition_leaders(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """The node id leading each partition of ``topic`` (-1 where none leads now), from the cluster's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
        if described["error_code"]:
            raise StreamError(f"cannot describe topic {topic!r} on {bootstrap}: error {described['error_code']}")
        return {p["partition"]: p["leader"] for p in described["partitions"]}
    finally:
        await admin.close()


async def under_replicated(bootstrap: str, topics: list[str] | None = None, timeout_s: float = 30.0) -> list[str]:
    """The partitions of ``topics`` (None: every topic, the internal ones too) with fewer in-sync replicas than
    replicas, as "topic/partition: in sync [1, 3] of [1, 2, 3]" (a node restarted and still catching up)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    found = []
    for topic in described:
        if topic["error_code"]:
            found.append(f"{topic['topic']}: error {topic['error_code']}")
            continue
        for p in topic["partitions"]:
            if set(p["isr"]) != set(p["replicas"]):
                found.append(
                    f"{topic['topic']}/{p['partition']}: in sync {sorted(p['isr'])} of {sorted(p['replicas'])}"
                )
    return sorted(found)


async def lists_a_live_broker(bootstrap: str, timeout_s: float) -> bool:
    """Does a metadata request to ``bootstrap`` list a live broker?  False while it does not
    answer (a broker starting)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()
