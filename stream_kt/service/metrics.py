"""The processor's Prometheus metrics: plain counters updated once per batch, exported at scrape time.

The hot path only adds integers and bins a batch's values with numpy
(``BatchHistogram.observe_many``); ``prometheus_client`` sees them through a collector
when ``/metrics`` is scraped.  Everything runs on the event loop's thread, so no locks.

    stream_kt_events_in_total                 records consumed (valid and invalid)
    stream_kt_events_out_total                mastery messages of committed batches
    stream_kt_dlq_total{reason}               dead letters delivered, by ``events.REASONS`` code
    stream_kt_replays_skipped_total           events a stored state had already applied
    stream_kt_batch_fill_ratio                histogram: students in a model step / B
    stream_kt_step_latency_seconds            histogram: one model step
    stream_kt_end_to_end_latency_seconds      histogram: output delivered - event ``ts``
    stream_kt_consumer_lag{topic,partition}   gauge: the broker's high-water mark - the committed offset,
                                              assigned partitions
    stream_kt_batch_retry_seconds             gauge: how long the current batch has been retrying (0: none is)
    stream_kt_redis_errors_total              failed Redis round trips (each is retried)
    stream_kt_redis_wait_failures_total       batches whose state writes reached fewer than redis_min_replicas
                                              replicas (retried)
    stream_kt_kafka_errors_total              failed deliveries and refused commits
    stream_kt_corrupt_states_total            stored states that could not be read (quarantined; the student restarted)
    stream_kt_processing_errors_total         events the processor failed on (dead letters, reason processing_error)
    stream_kt_state_rebuilds_total            states of another model version rebuilt over their windows
    stream_kt_warm_promotions_total           states of another model version replaced by this version's shadow state
    stream_kt_shadow_errors_total             batches the shadow model failed on and skipped (the served model went on)
    stream_kt_model_info{version}             gauge 1: the served checkpoint
    stream_kt_online_scored_total{version}    answers scored online (``quality.py``: a student's first answer is not)
    stream_kt_online_auc{version,window}      this process's online AUC: window "run" (since start) or "recent"
                                              (the last ``quality_window`` scored answers); likewise
    stream_kt_online_logloss, stream_kt_online_rmse, stream_kt_online_accuracy
The fleet's online quality (every processor's counts, in Redis) is ``/quality`` and ``stream-kt quality``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from stream_kt.service.quality import RecentScores, Scores

QUALITY_WINDOW = 100_000  # the default of ``settings.quality_window``

NAMES = (
    "stream_kt_events_in_total",
    "stream_kt_events_out_total",
    "stream_kt_dlq_total",
    "stream_kt_replays_skipped_total",
    "stream_kt_batch_fill_ratio",
    "stream_kt_step_latency_seconds",
    "stream_kt_end_to_end_latency_seconds",
    "stream_kt_consumer_lag",
    "stream_kt_batch_retry_seconds",
    "stream_kt_redis_errors_total",
    "stream_kt_redis_wait_failures_total",
    "stream_kt_kafka_errors_total",
    "stream_kt_corrupt_states_total",
    "stream_kt_processing_errors_total",
    "stream_kt_state_rebuilds_total",
    "stream_kt_warm_promotions_total",
    "stream_kt_shadow_errors_total",
    "stream_kt_model_info",
    "stream_kt_online_scored_total",
    "stream_kt_online_auc",
    "stream_kt_online_logloss",
    "stream_kt_online_rmse",
    "stream_kt_online_accuracy",
)
FILL_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
STEP_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
END_TO_END_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BatchHistogram:
    """A Prometheus histogram filled a batch of values at a time."""

    def __init__(self, upper_bounds: Iterable[float]) -> None:
        self.upper_bounds = np.asarray(tuple(upper_bounds), dtype=np.float64)
        self.counts = np.zeros(len(self.upper_bounds) + 1, dtype=np.int64)  # the last bin is +Inf
        self.sum = 0.0

    def observe_many(self, values: np.ndarray | list[float]) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        # bin i holds upper_bounds[i-1] < v <= upper_bounds[i]: Prometheus's "le"
        self.counts += np.bincount(np.searchsorted(self.upper_bounds, values, side="left"), minlength=len(self.counts))
        self.sum += float(values.sum())

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = np.cumsum(self.counts).tolist()
        buckets = [(floatToGoString(b), c) for b, c in zip(self.upper_bounds.tolist(), cumulative)] + [  # type: ignore[no-untyped-call]
            ("+Inf", cumulative[-1])
        ]
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class Metrics(Collector):
    """One processor's metrics, in its own registry (several processors may share a process in tests)."""

    def __init__(self, process_metrics: bool = True) -> None:
        self.model_version: str | None = None
        self.events_in = 0
        self.events_out = 0
        self.replays_skipped = 0
        self.batches = 0  # committed (not exported: events_in and events_out say more)
        self.dlq: Counter[str] = Counter()
        self.redis_errors = 0
        self.redis_wait_failures = 0
        self.kafka_errors = 0
        self.corrupt_states = 0
        self.processing_errors = 0
        self.state_rebuilds = 0
        self.warm_promotions = 0
        self.shadow_errors = 0
        self.batch_fill = BatchHistogram(FILL_BUCKETS)
        self.step_latency = BatchHistogram(STEP_BUCKETS_S)
        self.end_to_end_latency = BatchHistogram(END_TO_END_BUCKETS_S)
        self.consumer_lag: dict[tuple[str, int], int] = {}
        self.batch_retry_seconds: Callable[[], float] = lambda: 0.0  # the processor's clock, read at scrape time
        self.quality: dict[str, Scores] = {}  # model version -> this process's online scores since start
        self.recent: dict[str, RecentScores] = {}  # model version -> its last ``quality_window`` scored answers
        self.quality_window = QUALITY_WINDOW
        self.fleet_quality: Callable[[], Awaitable[dict[str, Scores]]] | None = None  # every processor's, from Redis
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        if process_metrics:
            ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, open fds

    def record_batch(self, events_in: int, events_out: int, replays_skipped: int, dead_letters: Iterable[str]) -> None:
        """A committed batch: its record count, outputs, skipped replays and dead-letter reasons."""
        self.batches += 1
        self.events_in += events_in
        self.events_out += events_out
        self.replays_skipped += replays_skipped
        self.dlq.update(dead_letters)

    def record_quality(self, version: str, p_correct: np.ndarray, answers: np.ndarray) -> None:
        """A committed batch's scored answers of model ``version``."""
        if not len(p_correct):
            return
        self.quality.setdefault(version, Scores()).add(p_correct, answers)
        self.recent.setdefault(version, RecentScores(self.quality_window)).add(p_correct, answers)

    def quality_summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """version -> {"run": ..., "recent": ...}: this process's online quality."""
        return {
            version: {"run": scores.summary(), "recent": self.recent[version].summary()}
            for version, scores in sorted(self.quality.items())
        }

    def record_steps(self, fills: list[float], seconds: list[float]) -> None:
        """Model steps: each one's rows / B and duration."""
        self.batch_fill.observe_many(fills)
        self.step_latency.observe_many(seconds)

    def record_latencies_ms(self, delivered_ms: int, event_ts_ms: list[int]) -> None:
        """End-to-end latency of the outputs delivered at ``delivered_ms``."""
        if event_ts_ms:
            self.end_to_end_latency.observe_many((delivered_ms - np.asarray(event_ts_ms, dtype=np.float64)) / 1000.0)

    def quality_families(self) -> Iterator[Metric]:
        scored = CounterMetricFamily(
            "stream_kt_online_scored_total",
            "Answers scored online (a student's first answer is not).",
            labels=["version"],
        )
        gauges = {
            name: GaugeMetricFamily(
                f"stream_kt_online_{name}",
                f"Online {label} of p_correct against the answer, per model version and window.",
                labels=["version", "window"],
            )
            for name, label in (("auc", "AUC"), ("logloss", "log-loss"), ("rmse", "RMSE"), ("accuracy", "accuracy"))
        }
        for version, windows in self.quality_summary().items():
            scored.add_metric([version], windows["run"]["count"])
            for window, summary in windows.items():
                for name, family in gauges.items():
                    family.add_metric([version, window], summary[name])
        yield scored
        yield from gauges.values()

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "stream_kt_events_in_total",
            "Records consumed from the input topic (valid and invalid).",
            value=self.events_in,
        )
        yield CounterMetricFamily(
            "stream_kt_events_out_total", "Mastery messages of committed batches.", value=self.events_out
        )
        dlq = CounterMetricFamily("stream_kt_dlq_total", "Dead letters delivered, by reason.", labels=["reason"])
        for reason, count in sorted(self.dlq.items()):
            dlq.add_metric([reason], count)
        yield dlq
        yield CounterMetricFamily(
            "stream_kt_replays_skipped_total",
            "Events a stored state had already applied (replays).",
            value=self.replays_skipped,
        )
        yield CounterMetricFamily(
            "stream_kt_redis_errors_total", "Failed Redis round trips (the batch is retried).", value=self.redis_errors
        )
        yield CounterMetricFamily(
            "stream_kt_redis_wait_failures_total",
            "Batches whose state writes reached fewer replicas than redis_min_replicas (retried).",
            value=self.redis_wait_failures,
        )
        yield CounterMetricFamily(
            "stream_kt_kafka_errors_total", "Failed Kafka deliveries and refused commits.", value=self.kafka_errors
        )
        yield CounterMetricFamily(
            "stream_kt_corrupt_states_total",
            "Stored states that could not be read: quarantined, the student restarted.",
            value=self.corrupt_states,
        )
        yield CounterMetricFamily(
            "stream_kt_processing_errors_total",
            "Events the processor failed on: dead letters with reason processing_error.",
            value=self.processing_errors,
        )
        yield CounterMetricFamily(
            "stream_kt_state_rebuilds_total",
            "States of another model version rebuilt over their windows.",
            value=self.state_rebuilds,
        )
        yield CounterMetricFamily(
            "stream_kt_warm_promotions_total",
            "States of another model version replaced by this version's shadow state (no rebuild).",
            value=self.warm_promotions,
        )
        yield CounterMetricFamily(
            "stream_kt_shadow_errors_total",
            "Batches the shadow model failed on and skipped (the served model went on).",
            value=self.shadow_errors,
        )
        yield self.batch_fill.family("stream_kt_batch_fill_ratio", "Students in a model step / the batch shape B.")
        yield self.step_latency.family("stream_kt_step_latency_seconds", "Duration of one model step.")
        yield self.end_to_end_latency.family(
            "stream_kt_end_to_end_latency_seconds", "Output delivered minus the event's ts."
        )
        lag = GaugeMetricFamily(
            "stream_kt_consumer_lag",
            "The broker's high-water mark minus the committed offset, per assigned input partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(self.consumer_lag.items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        yield GaugeMetricFamily(
            "stream_kt_batch_retry_seconds",
            "How long the current batch has been retrying (0: none is).",
            value=self.batch_retry_seconds(),
        )
        yield from self.quality_families()
        info = GaugeMetricFamily("stream_kt_model_info", "The served model version (value 1).", labels=["version"])
        if self.model_version is not None:
            info.add_metric([self.model_version], 1)
        yield info
