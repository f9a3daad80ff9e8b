"""One bad message never stops the service: oversized dead letters fit, readiness tells the
truth, permanent errors stop."""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest

from stream_kt.checkpoint import load_checkpoint
from stream_kt.cli import main
from stream_kt.service import http, kafka_io
from stream_kt.service.exceptions import FatalStreamError
from stream_kt.service.metrics import Metrics
from stream_kt.service.processor import run_processor
from stream_kt.service.redis_store import redis_client_sync
from stream_kt.tools.brokers import free_port

from .conftest import (
    TopicReader,
    answer_messages,
    committed_offsets,
    dedupe_outputs,
    expected_output_keys,
    produce,
    running_processor,
    synthetic_answers,
    until,
)
from .test_observability import samples, scrape

MIB = 1 << 20
# just under, at and over a mebibyte (1,048,446 bytes: what a default aiokafka producer accepts, but not with
# dead-letter headers on top), and 5 MB: events that are dead letters ("oversized") too big to forward whole
SIZES = (MIB - 2_000, 1_048_446, MIB, MIB + 1_000, 5 * 1000 * 1000)


async def create_topic(bootstrap: str, name: str, partitions: int, max_message_bytes: int | None = None) -> None:
    configs = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
    await kafka_io.ensure_topics(bootstrap, [name], partitions, configs=configs)


async def produce_large(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = kafka_io.make_tool_producer(bootstrap, acks="all", max_request_size=8 * MIB, max_batch_size=8 * MIB)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@pytest.mark.brokers("kafka", "tansu")
def test_oversized_events_get_dead_letters_that_fit_and_every_other_event_is_answered(
    broker, make_settings, tiny_checkpoint
) -> None:
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(partitions=1)
    answers = synthetic_answers(checkpoint, students=3, seed=21, min_length=10, max_length=15)
    oversized = [
        (b"big", bytes([0x80 + i]) + b"x" * (size - 1)) for i, size in enumerate(SIZES)
    ]  # not msgpack maps, and too big anyway
    half = len(answers) // 2
    messages = answer_messages(answers[:half]) + oversized + answer_messages(answers[half:])

    async def scenario():
        await create_topic(
            broker.bootstrap, settings.in_topic, 1, max_message_bytes=8 * MIB
        )  # so Kafka takes the 5 MB event in
        await produce(settings, [])  # the other topics, defaults (the dead-letter topic keeps Kafka's 1 MB limit)
        await produce_large(broker.bootstrap, settings.in_topic, messages)
        async with (
            TopicReader(settings.bootstrap, settings.out_topic) as out,
            TopicReader(settings.bootstrap, settings.dlq_topic) as dlq,
        ):
            async with running_processor(settings, checkpoint):
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=120)
                await dlq.read_until(lambda rs: len(rs) >= len(SIZES), timeout_s=60)
            committed = await committed_offsets(settings)
        return out.records, dlq.records, committed

    records, dead, committed = asyncio.run(scenario())
    assert set(dedupe_outputs(records)) == expected_output_keys(answers)
    assert committed == {0: len(messages)}  # nothing stuck: every offset, the oversized ones included, is committed
    assert len(dead) == len(SIZES)
    for record, (_, original) in zip(sorted(dead, key=lambda r: r.offset), oversized):
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["reason"] == "oversized" and headers["source"].startswith(f"{settings.in_topic}/0/")
        assert len(record.value) + len(record.key) + sum(len(n) + len(v) for n, v in record.headers) <= MIB
        if headers.get("truncated") == "true":
            assert (
                int(headers["original_size"]) == len(original)
                and headers["sha256"] == hashlib.sha256(original).hexdigest()
            )
            assert original.startswith(record.value) and len(record.value) > MIB // 2
        else:
            assert record.value == original and len(original) < MIB
    sizes = {
        len(original): dict(r.headers).get("truncated")
        for r, (_, original) in zip(sorted(dead, key=lambda r: r.offset), oversized)
    }
    assert (
        sizes[5 * 1000 * 1000] == b"true" and sizes[MIB + 1_000] == b"true" and sizes[1_048_446] == b"true"
    )  # they would not have fitted


def test_dead_letters_fit_a_dead_letter_topic_with_a_small_limit(broker, make_settings, tiny_checkpoint) -> None:
    """The processor reads the dead-letter topic's own max.message.bytes (Kafka) and truncates to it."""
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(partitions=1)
    bad = b"\xc1" + b"y" * 20_000  # 20 kB: over max_event_bytes

    async def scenario():
        await create_topic(broker.bootstrap, settings.dlq_topic, 1, max_message_bytes=8_000)
        await produce(settings, [(b"k", bad)])
        async with TopicReader(settings.bootstrap, settings.dlq_topic) as dlq:
            async with running_processor(settings, checkpoint):
                await dlq.read_until(lambda rs: len(rs) >= 1)
        return dlq.records[0]

    record = asyncio.run(scenario())
    headers = dict(record.headers)
    assert headers["reason"] == b"oversized"
    assert (
        headers["truncated"] == b"true"
        and int(headers["original_size"]) == len(bad)
        and len(record.value) < 8_000
        and bad.startswith(record.value)
    )


def test_a_permanent_error_on_the_mastery_topic_stops_the_processor_with_the_batch_uncommitted(
    broker, make_settings, tiny_checkpoint
) -> None:
    """Outputs the broker refuses for good (too large for the mastery topic): stop, do not spin, do not skip."""
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(partitions=1)
    answers = synthetic_answers(checkpoint, students=2, seed=22, min_length=5, max_length=8)

    async def scenario():
        await create_topic(broker.bootstrap, settings.out_topic, 1, max_message_bytes=64)  # no mastery message fits
        await produce(settings, answer_messages(answers))
        with pytest.raises(
            FatalStreamError,
            match="cannot write mastery outputs to Kafka .*MessageSizeTooLarge.*retrying cannot fix this",
        ):
            await asyncio.wait_for(run_processor(settings, checkpoint), 60)
        return await committed_offsets(settings)

    assert asyncio.run(scenario()) == {}


def test_readyz_turns_unready_and_lag_grows_while_a_batch_retries_then_both_recover(
    make_settings, tiny_checkpoint, own_redis
) -> None:
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(redis_url=own_redis.url, unready_after_retry_s=1, partitions=1)
    answers = synthetic_answers(checkpoint, students=4, seed=23, min_length=20, max_length=30)
    parts = answers[:20], answers[20:40], answers[40:]
    admin = redis_client_sync(own_redis.url)
    port = free_port()

    async def scenario():
        metrics, readiness = Metrics(process_metrics=False), http.Readiness()
        observed: dict[str, object] = {}
        await produce(settings, answer_messages(parts[0]))
        async with http.serving(metrics, readiness, port), TopicReader(settings.bootstrap, settings.out_topic) as out:
            stop, ready = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(
                run_processor(settings, checkpoint, stop=stop, ready=ready, metrics=metrics, readiness=readiness)
            )
            await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(parts[0]))

            async def get(path: str) -> tuple[int, str]:
                return await asyncio.to_thread(scrape, port, path)  # off the loop: the endpoint runs on it

            async def page() -> dict:
                return samples((await get("/metrics"))[1])

            async def lag() -> float:
                return sum(v for (name, _), v in (await page()).items() if name == "stream_kt_consumer_lag")

            async def ready_and_no_lag() -> bool:
                return (await get("/readyz"))[0] == 200 and await lag() == 0

            async def unready() -> bool:
                return (await get("/readyz"))[0] == 503

            await until(ready_and_no_lag, 20, "ready with no lag", poll_s=0.1)
            admin.config_set("min-replicas-to-write", 1)  # writes refused, PING answered: a retriable error
            await produce(settings, answer_messages(parts[1]))
            await until(unready, 30, "unready while the batch retries", poll_s=0.1)
            observed["unready"] = (await get("/readyz"))[1]
            observed["retry_s"] = (await page())[("stream_kt_batch_retry_seconds", ())]
            first_lag = await lag()
            await produce(settings, answer_messages(parts[2]))

            async def grown() -> bool:
                return await lag() >= first_lag + len(parts[2])

            await until(grown, 20, "lag growing with each new event", poll_s=0.1)
            observed["lags"] = (first_lag, await lag())
            admin.config_set("min-replicas-to-write", 0)
            await until(ready_and_no_lag, 60, "ready again, no lag", poll_s=0.1)
            observed["after"] = (await get("/readyz"), (await page())[("stream_kt_batch_retry_seconds", ())])
            await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers))
            stop.set()
            await asyncio.wait_for(task, 60)
        return observed

    observed = asyncio.run(scenario())
    admin.close()
    assert "a batch has been retrying for" in observed["unready"] and observed["retry_s"] > 1
    first, later = observed["lags"]
    assert first >= 1 and later >= first + len(parts[2])
    assert observed["after"] == ((200, "ready\n"), 0.0)


def test_serve_exits_with_one_line_when_its_metrics_port_is_taken(
    tiny_checkpoint, broker, redis_url, key_prefix, capsys
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(
            [
                "serve",
                "--checkpoint",
                str(tiny_checkpoint),
                "--bootstrap",
                broker.bootstrap,
                "--redis",
                redis_url,
                "--key-prefix",
                key_prefix,
                "--metrics-port",
                str(port),
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert (
        err[0].startswith(f"stream-kt serve: error: metrics port {port}: cannot listen") and "KT_METRICS_PORT" in err[0]
    )
