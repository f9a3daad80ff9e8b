"""Benchmarks 2 and 3: end to end through the real broker and Redis, per variant.

For each variant (stream-kt; the hand-written loop, ``stream_kt.tools.bench.handwritten``; naive;
recompute) one processor process (``stream_kt.tools.bench.worker``) runs against fresh topics and a
fresh key prefix:

1. Sustained throughput: ``events`` answer events are produced first, then the
   processor starts and drains them; events/s = answered / the span of the outputs'
   Kafka timestamps (when the processor produced them), counted by a follower
   consuming the output topic.
2. Latency: at offered rates of 10%, 50% and 90% of that maximum, events are sent
   paced (``ts`` = wall clock at send) and p50/p95/p99 of (output received - ts) taken.
3. Costs per event: the processor's CPU seconds over the drain / events (full batches:
   ``drain_cpu_us_per_event``, the ``engine_us_per_event`` of the summary) and over the
   whole run after start-up, paced runs and their idle polls included
   (``cpu_ms_per_event``), the load generator's and the follower's
   (this process, while it pre-produces and while it follows the drain), the broker
   process's CPU seconds over the drain / events (where the broker is ours), and Redis
   round trips per event from Redis' own ``total_reads_processed`` counter (socket
   reads it served: one per pipeline or command round trip) over the same span.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from stream_kt.data.sequences import StudentSequence
from stream_kt.service.kafka_io import ensure_topics
from stream_kt.service.redis_store import redis_client_sync
from stream_kt.settings import StreamSettings
from stream_kt.tools.follow import FollowTally, follow_outputs, now_ms
from stream_kt.tools.inspect_state import delete_keys_with_prefix
from stream_kt.tools.processes import settings_environ
from stream_kt.tools.replay import event_order, send_events

VARIANT_BATCH = {
    "stream-kt": None,
    "stream-kt+shadow": None,
    "handwritten": None,
    "naive": 1,
    "recompute": 64,
}  # None: the configured B
RATE_FRACTIONS = (0.1, 0.5, 0.9)


@dataclass
class Target:
    bootstrap: str
    redis_url: str
    checkpoint: Path
    backend: str
    batch_size: int
    partitions: int = 6
    broker: str = "external"  # "kafka", "kafka-3-nodes", "embedded" (tansu) or "external" (a --bootstrap of the user's)
    broker_pids: tuple[
        int, ...
    ] = ()  # the broker's processes (a cluster's nodes), when they are ours: their CPU is measured
    shadow: Path | None = None  # the challenger of the "stream-kt+shadow" variant
    redis_min_replicas: int = (
        0  # KT_REDIS_MIN_REPLICAS of the stream-kt variants: WAIT for this many replicas before each commit
    )


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) from /proc; None where unreadable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15 of stat)


def processes_cpu_s(pids: tuple[int, ...]) -> float | None:
    """The CPU seconds of every process of ``pids`` together; None when there are none or one is unreadable."""
    seconds = [process_cpu_s(pid) for pid in pids]
    return None if not seconds or None in seconds else sum(s for s in seconds if s is not None)


class Worker:
    """A ``stream_kt.tools.bench.worker`` subprocess on its own topics and key prefix."""

    def __init__(self, target: Target, variant: str) -> None:
        run = uuid.uuid4().hex[:8]
        self.target = target
        self.variant = variant
        self.batch = VARIANT_BATCH[variant] or target.batch_size
        self.settings = StreamSettings(
            bootstrap=target.bootstrap,
            redis_url=target.redis_url,
            checkpoint=str(target.checkpoint),
            in_topic=f"bench-{run}.answers",
            out_topic=f"bench-{run}.mastery",
            dlq_topic=f"bench-{run}.dlq",
            group_id=f"bench-{run}-group",
            key_prefix=f"bench-{run}",
            backend=target.backend if variant.startswith("stream-kt") else "eager",
            batch_size=self.batch,
            partitions=target.partitions,
            shadow=str(target.shadow) if variant == "stream-kt+shadow" and target.shadow else "",
            redis_min_replicas=target.redis_min_replicas if variant.startswith("stream-kt") else 0,
        )
        self.in_topic, self.out_topic, self.dlq_topic, self.key_prefix = (
            self.settings.in_topic,
            self.settings.out_topic,
            self.settings.dlq_topic,
            self.settings.key_prefix,
        )
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        """The ``stream_kt.tools.bench.worker`` command line of this variant; its settings go in ``environ``."""
        return [sys.executable, "-m", "stream_kt.tools.bench.worker", "--variant", self.variant]

    def environ(self) -> dict[str, str]:
        """The worker's environment: ours, one torch thread, and every setting (its topics,
        key prefix, model, batch)."""
        return {**os.environ, "OMP_NUM_THREADS": "1", **settings_environ(self.settings)}

    def start(self, timeout_s: float = 60.0) -> None:
        self.errors = tempfile.TemporaryFile("w+")  # the worker's stderr: its last line says why it died
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=self.errors, text=True, env=self.environ()
        )
        deadline = time.monotonic() + timeout_s
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.strip() == "ready":
                return
            if not line and self.process.poll() is not None:
                self.died()
        raise RuntimeError(f"benchmark worker {self.variant} not ready within {timeout_s:.0f} s")

    def died(self) -> None:
        """Raise, naming the worker's exit status and the last line it wrote to stderr."""
        assert self.process is not None
        self.errors.seek(0)
        lines = [line.strip() for line in self.errors if line.strip()]
        raise RuntimeError(
            f"benchmark worker {self.variant} exited with {self.process.returncode}: "
            f"{lines[-1] if lines else 'no message'}"
        )

    async def watch(self, awaitable):
        """Await ``awaitable`` (reading the worker's outputs), failing at once if the worker exits meanwhile."""
        assert self.process is not None
        task = asyncio.ensure_future(awaitable)
        while not task.done():
            await asyncio.wait([task], timeout=0.5)
            if not task.done() and self.process.poll() is not None:
                task.cancel()
                self.died()
        return task.result()

    def stop(self) -> dict:
        assert self.process is not None and self.process.stdout is not None
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        self.errors.close()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


def cpu_s() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def redis_reads(redis_url: str) -> int:
    client = redis_client_sync(redis_url)
    try:
        return int(client.info("stats")["total_reads_processed"])
    finally:
        client.close()


async def send_and_follow(
    worker: Worker,
    students: list[StudentSequence],
    order,
    rate: float | None,
    progress: bool,
    tally: FollowTally | None = None,
) -> dict:
    """Send ``order`` paced at ``rate`` events/s while following the worker's outputs; the latency summary.
    ``tally``: a fresh one to fill (its raw latencies), else one of our own."""
    tally = tally if tally is not None else FollowTally(since_ms=now_ms())
    positioned = asyncio.Event()
    # from the outputs of this run on: reading the earlier runs' (stale, skipped) first would be measured as latency
    following = asyncio.create_task(
        follow_outputs(
            worker.target.bootstrap,
            worker.out_topic,
            tally,
            dlq_topic=worker.dlq_topic,
            timeout_s=120,
            from_end=True,
            positioned=positioned,
        )
    )
    await asyncio.wait([following, asyncio.create_task(positioned.wait())], return_when=asyncio.FIRST_COMPLETED)
    if following.done():
        following.result()  # it failed before it was positioned: raise that
    result = await send_events(
        worker.target.bootstrap, worker.in_topic, students, order, rate_per_s=rate, progress=progress
    )
    tally.expected = result.sent
    await following
    summary = tally.summary(result.first_send_ms)
    summary["offered_per_s"] = rate
    summary["sent_per_s"] = round(result.events_per_s, 1)
    if tally.first_output_ms and tally.last_output_ms and tally.last_output_ms > tally.first_output_ms:
        summary["drain_events_per_s"] = round(
            tally.answered / ((tally.last_output_ms - tally.first_output_ms) / 1000), 1
        )
    return summary


def run_variant(
    target: Target,
    variant: str,
    students: list[StudentSequence],
    latency_seconds: float,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Throughput, latency at three offered rates, and per-event costs of one variant."""
    order = event_order(students, seed)
    worker = Worker(target, variant)
    asyncio.run(
        ensure_topics(target.bootstrap, [worker.in_topic, worker.out_topic, worker.dlq_topic], target.partitions)
    )  # the hand-written loop creates none
    # 1. pre-produce, then start the processor and time the drain
    tally = FollowTally(since_ms=0, expected=len(order))
    cpu_before_send = cpu_s()
    sent = asyncio.run(send_events(target.bootstrap, worker.in_topic, students, order, progress=progress))
    sender_cpu_s = cpu_s() - cpu_before_send
    reads_before = redis_reads(target.redis_url)
    worker.start()
    try:
        assert worker.process is not None
        broker_cpu_before, follower_cpu_before, worker_cpu_before = (
            processes_cpu_s(target.broker_pids),
            cpu_s(),
            process_cpu_s(worker.process.pid),
        )
        asyncio.run(
            worker.watch(
                follow_outputs(target.bootstrap, worker.out_topic, tally, dlq_topic=worker.dlq_topic, timeout_s=600)
            )
        )
        broker_cpu_after, follower_cpu_s, worker_cpu_after = (
            processes_cpu_s(target.broker_pids),
            cpu_s() - follower_cpu_before,
            process_cpu_s(worker.process.pid),
        )
        reads = redis_reads(target.redis_url) - reads_before
        # the span of the outputs' Kafka timestamps: when the processor produced them, however fast the follower reads
        first, last = (
            (tally.first_produced_ms, tally.last_produced_ms)
            if tally.first_produced_ms is not None
            else (tally.first_output_ms, tally.last_output_ms)
        )
        span_s = max((last or 0) - (first or 0), 1) / 1000
        max_rate = tally.answered / span_s
        answered = max(tally.answered, 1)
        result = {
            "variant": variant,
            "broker": target.broker,
            "redis_min_replicas": worker.settings.redis_min_replicas,
            "batch": worker.batch,
            "events": sent.sent,
            "answered": tally.answered,
            "events_per_s": round(max_rate, 1),
            "redis_round_trips_per_event": round(reads / answered, 3),
            # the processor over the drain: backlogged, so every poll is a full batch
            "drain_cpu_us_per_event": None
            if worker_cpu_before is None or worker_cpu_after is None
            else round(1e6 * (worker_cpu_after - worker_cpu_before) / answered, 1),
            # the load generator (pre-producing every event) and the follower (reading every output), in this process
            "load_generator_cpu_us_per_event": round(1e6 * sender_cpu_s / max(sent.sent, 1), 1),
            "follower_cpu_us_per_event": round(1e6 * follower_cpu_s / answered, 1),
            # the drain: the broker serves the processor's fetches, produces and commits, and the follower's fetches
            "broker_cpu_us_per_event": None
            if broker_cpu_before is None or broker_cpu_after is None
            else round(1e6 * (broker_cpu_after - broker_cpu_before) / max(tally.answered, 1), 1),
        }
        # 2. latency at fractions of the measured maximum, each for about latency_seconds
        latency = []
        for fraction in RATE_FRACTIONS:
            rate = max(1.0, fraction * max_rate)
            count = max(50, int(rate * latency_seconds))
            paced_order = order[:count] if count <= len(order) else order
            paced = [students[i] for i in sorted({i for i, _ in paced_order})]
            # the same students again: their states continue, as a live stream's would
            index = {s.student_id: n for n, s in enumerate(paced)}
            remapped = [(index[students[i].student_id], p) for i, p in paced_order]
            summary = asyncio.run(worker.watch(send_and_follow(worker, paced, remapped, rate, progress)))
            latency.append({"fraction": fraction, **summary})
        result["latency"] = latency
    finally:
        stats = worker.stop()
        delete_keys_with_prefix(target.redis_url, worker.key_prefix)
    result["cpu_ms_per_event"] = round(1000 * stats.get("cpu_s", float("nan")) / max(stats.get("events_in", 1), 1), 3)
    result["processor"] = stats
    return result
