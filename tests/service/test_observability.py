"""Metrics, /healthz, /readyz and JSON logs: unit checks, then a processor on the real broker and Redis, scraped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_kt.checkpoint import load_checkpoint
from stream_kt.service import http
from stream_kt.service.events import encode_answer
from stream_kt.service.exceptions import StreamError
from stream_kt.service.logging_setup import JsonFormatter
from stream_kt.service.metrics import NAMES, BatchHistogram, Metrics
from stream_kt.service.processor import run_processor
from stream_kt.tools.brokers import free_port

from .conftest import TopicReader, answer_messages, by_student, produce, synthetic_answers, until


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a /metrics page."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_batch_histogram_bins_like_prometheus():
    histogram = BatchHistogram([0.1, 1.0])
    histogram.observe_many(np.array([0.05, 0.1, 0.5, 1.0, 3.0]))  # le is inclusive
    histogram.observe_many([])
    assert histogram.counts.tolist() == [2, 2, 1] and histogram.count == 5
    assert abs(histogram.sum - 4.65) < 1e-12


def test_metrics_page_exports_every_name_once_per_batch_update():
    metrics = Metrics(process_metrics=False)
    metrics.model_version = "dkt-abc"
    metrics.record_batch(
        events_in=5, events_out=3, replays_skipped=0, dead_letters=["oversized", "not_msgpack", "oversized"]
    )
    metrics.record_steps([3 / 4, 1 / 4], [0.0003, 0.0002])
    metrics.record_latencies_ms(10_000, [9_990, 9_900, 9_000])
    metrics.consumer_lag = {("kt.answers", 0): 7}
    page = samples(http.generate_latest(metrics.registry).decode())
    families = {
        family.name for family in text_string_to_metric_families(http.generate_latest(metrics.registry).decode())
    }
    assert {name.removesuffix("_total") for name in NAMES} == families
    assert page[("stream_kt_events_in_total", ())] == 5 and page[("stream_kt_events_out_total", ())] == 3
    assert page[("stream_kt_dlq_total", (("reason", "oversized"),))] == 2
    assert (
        page[("stream_kt_batch_fill_ratio_count", ())] == 2
        and page[("stream_kt_batch_fill_ratio_bucket", (("le", "0.3"),))] == 1
    )
    assert page[("stream_kt_end_to_end_latency_seconds_bucket", (("le", "0.01"),))] == 1
    assert page[("stream_kt_end_to_end_latency_seconds_bucket", (("le", "1.0"),))] == 3
    assert page[("stream_kt_consumer_lag", (("partition", "0"), ("topic", "kt.answers")))] == 7
    assert page[("stream_kt_model_info", (("version", "dkt-abc"),))] == 1


def test_probes_before_start_up_and_a_port_in_use(caplog):
    async def scenario():
        metrics, readiness = Metrics(process_metrics=False), http.Readiness()
        port = free_port()
        async with http.serving(metrics, readiness, port) as server:
            answers = [await server.respond("GET", path) for path in ("/healthz", "/readyz", "/nope")]
            second = http.ObservabilityServer(metrics, readiness, port)
            with pytest.raises(
                StreamError, match=f"metrics port {port}: cannot listen"
            ):  # serve stops: see test_bad_messages
                await second.start()
            return answers

    healthz, readyz, missing = asyncio.run(scenario())
    assert healthz[0] == 200 and missing[0] == 404
    assert readyz[0] == 503 and readyz[2] == b"not ready: starting: model not loaded\n"


def test_json_logs_are_one_object_a_line_with_extra_fields():
    record = logging.LogRecord(
        "stream_kt.service.processor",
        logging.WARNING,
        __file__,
        1,
        "%s/%d: dead letter (%s)",
        ("kt.answers", 3, "oversized"),
        None,
    )
    record.partition = 3
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (
        entry["message"] == "kt.answers/3: dead letter (oversized)"
        and entry["level"] == "WARNING"
        and entry["partition"] == 3
    )
    assert (
        entry["logger"] == "stream_kt.service.processor"
        and entry["ts"].endswith("Z")
        and "ValueError: boom" in entry["exc"]
    )


def test_a_running_processor_counts_everything_and_its_readiness_follows_redis(
    make_settings, tiny_checkpoint, own_redis, caplog
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(redis_url=own_redis.url, max_event_bytes=256)
    answers = synthetic_answers(checkpoint, students=8, seed=11, min_length=20, max_length=30)
    oversized = encode_answer("someone", "0", 1, 0, event_id="x" * 300)
    messages = answer_messages(answers) + [(b"someone", b"garbage"), (b"someone", oversized)]
    port = free_port()

    async def scenario():
        metrics, readiness = Metrics(), http.Readiness()
        await produce(settings, messages)
        async with http.serving(metrics, readiness, port):
            async with TopicReader(settings.bootstrap, settings.out_topic) as out:
                async with processor_running(settings, checkpoint, metrics, readiness):
                    await out.read_until(lambda rs: len(rs) >= len(answers))
                    page: dict = {}

                    async def settled() -> (
                        bool
                    ):  # the last batch's metrics land after its commit; lag after the next refresh
                        page.clear()
                        page.update(samples((await asyncio.to_thread(scrape, port, "/metrics"))[1]))
                        lags = [v for (name, _), v in page.items() if name == "stream_kt_consumer_lag"]
                        return (
                            page.get(("stream_kt_events_in_total", ())) == len(messages)
                            and len(lags) == 3
                            and not any(lags)
                        )

                    def unsettled() -> str:
                        lags = [v for (name, _), v in page.items() if name == "stream_kt_consumer_lag"]
                        return f"metrics settling: {page.get(('stream_kt_events_in_total', ()))} events in, lags {lags}"

                    await until(settled, timeout_s=30, what=unsettled, poll_s=0.1)
                    ready = await asyncio.to_thread(scrape, port, "/readyz")
                    own_redis.stop()
                    unready = await asyncio.to_thread(scrape, port, "/readyz")
                    alive = await asyncio.to_thread(scrape, port, "/healthz")
        return page, ready, unready, alive

    page, ready, unready, alive = asyncio.run(scenario())
    assert page[("stream_kt_events_in_total", ())] == len(answers) + 2
    assert page[("stream_kt_events_out_total", ())] == len(answers)
    assert page[("stream_kt_dlq_total", (("reason", "oversized"),))] == 1  # max_event_bytes reached decode_answer
    assert page[("stream_kt_dlq_total", (("reason", "not_msgpack"),))] == 1
    assert page[("stream_kt_end_to_end_latency_seconds_count", ())] == len(answers)
    steps = page[("stream_kt_step_latency_seconds_count", ())]
    assert (
        steps >= max(len(seq) for seq in by_student(answers).values())
        and page[("stream_kt_batch_fill_ratio_count", ())] == steps
    )
    assert 0 < page[("stream_kt_batch_fill_ratio_sum", ())] / steps <= 1
    assert page[("stream_kt_redis_errors_total", ())] == 0 and page[("stream_kt_kafka_errors_total", ())] == 0
    assert page[("stream_kt_model_info", (("version", checkpoint.version),))] == 1
    assert ("process_cpu_seconds_total", ()) in page
    assert ready == (200, "ready\n")
    assert unready[0] == 503 and unready[1].startswith("not ready: redis unreachable")
    assert alive == (200, "ok\n")
    assert "garbage" not in caplog.text and "x" * 300 not in caplog.text  # no payloads in the logs


@contextlib.asynccontextmanager
async def processor_running(
    settings, checkpoint, metrics: Metrics, readiness: http.Readiness, timeout_s: float = 60.0
) -> AsyncIterator[None]:
    """``run_processor`` with this test's metrics and readiness, until the block ends."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_processor(settings, checkpoint, stop=stop, ready=ready, metrics=metrics, readiness=readiness)
    )
    await until(lambda: ready.is_set() or task.done(), timeout_s, "partitions assigned")
    if task.done():
        task.result()  # it failed: raise its error
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout_s)
