"""``stream-kt bench``'s run: the model step per backend, then end to end on each broker, and the summary."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stream_kt.backends import available_backends, resolve_backend_name
from stream_kt.checkpoint import Checkpoint, load_checkpoint
from stream_kt.errors import ConfigError
from stream_kt.service import kafka_io
from stream_kt.tools.bench.end_to_end import Target, run_variant
from stream_kt.tools.bench.step_throughput import cuda_step_throughput, step_throughput
from stream_kt.tools.bench.workload import bench_students, default_checkpoint
from stream_kt.tools.brokers import EmbeddedBroker, KafkaBroker, KafkaCluster, kafka_unavailable
from stream_kt.tools.processes import start_replicated

WARM_UP_EVENTS = 40_000
QUICK: dict[str, Any] = {
    "batches": [1, 8, 32, 64, 128, 256, 512],
    "events": 40_000,
    "naive_events": 3_000,
    "recompute_events": 8_000,
    "latency_s": 5.0,
}
FULL: dict[str, Any] = {
    "batches": [1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048],
    "events": 200_000,
    "naive_events": 10_000,
    "recompute_events": 30_000,
    "latency_s": 15.0,
}


@dataclass(frozen=True)
class BenchPlan:
    redis_url: str
    backend: str = "auto"
    batch: int = 64
    bootstrap: str | None = None  # a broker of the user's; None: start our own (``broker``)
    broker: str = "auto"  # auto, both, kafka, embedded
    checkpoint: str | None = None
    model: str | None = None
    threads: int = 1
    events: int | None = None
    skip_e2e: bool = False
    full: bool = False
    out: Path = Path("bench-results")  # benchmarks/results holds the committed record: stream-kt bench --update-record
    connect_timeout_s: int = 20  # a --bootstrap that does not answer as Kafka: one line after this long
    shadow: bool = False  # also stream-kt with a shadow (the same model with other weights): what a challenger costs
    nodes: int = 1  # Apache Kafka nodes we start: 3 is a KRaft cluster whose topics get three replicas, two in sync
    redis_replicas: int = (
        0  # >0: our own Redis primary with this many replicas, and serve WAITs for them before each commit
    )
    alternatives: bool = True  # the hand-written loop, recompute and naive beside stream-kt on the first broker


def broker_plan(
    bootstrap: str | None, broker: str, shadow: bool = False, nodes: int = 1, alternatives: bool = True
) -> list[tuple[str, tuple[str, ...]]]:
    """(broker, variants) in run order: every variant on the first broker, stream-kt alone on the second.

    ``nodes`` > 1: Apache Kafka only, as a cluster of that many nodes ("kafka-3-nodes").  ``alternatives``
    False: stream-kt (and its shadow) alone everywhere."""
    every = (
        "stream-kt",
        *(("stream-kt+shadow",) if shadow else ()),
        *(("handwritten", "recompute", "naive") if alternatives else ()),
    )
    if bootstrap:
        return [("external", every)]
    if nodes > 1:
        return [(f"kafka-{nodes}-nodes", every)]
    kinds = {"both": ["kafka", "embedded"], "kafka": ["kafka"], "embedded": ["embedded"]}.get(broker)
    if kinds is None:  # auto
        reason = kafka_unavailable()
        if reason:
            print(f"bench: embedded broker only ({reason})", flush=True)
        kinds = ["embedded"] if reason else ["kafka", "embedded"]
    return [(kind, every if n == 0 else ("stream-kt",)) for n, kind in enumerate(kinds)]


def e2e_summary(row: dict) -> dict:
    """The headline figures of one end-to-end run: throughput, latency at half and a tenth of it, costs per event."""
    half = next(l for l in row["latency"] if l["fraction"] == 0.5)
    tenth = next(l for l in row["latency"] if l["fraction"] == 0.1)
    return {
        "engine_us_per_event": row["drain_cpu_us_per_event"],  # full batches: the drain
        "engine_us_per_event_whole_run": round(
            1000 * row["cpu_ms_per_event"], 1
        ),  # the paced runs and their idle polls too
        "events_per_s": row["events_per_s"],
        "p50_ms": half["p50_ms"],
        "p99_ms": half["p99_ms"],
        "p50_ms_at_10pct": tenth["p50_ms"],
        "p99_ms_at_10pct": tenth["p99_ms"],
        "broker_cpu_us_per_event": row["broker_cpu_us_per_event"],
        "load_generator_cpu_us_per_event": row["load_generator_cpu_us_per_event"],
        "follower_cpu_us_per_event": row["follower_cpu_us_per_event"],
    }


def cuda_notes(results: dict) -> list[str]:
    """Lines under the table for a CUDA run: the card, and what one student-step copies each way."""
    rows = [r for r in results["step"] if r["backend"] == "cuda"]
    if not rows:
        return []
    lines = [f"gpu: {results['gpu']}; cuda-eager: the same step without CUDA graphs; cuda-f16: float16 mastery"]
    lines.append(
        f"copied per student-step: {rows[0]['bytes_to_gpu_per_step']:,} B to the GPU, "
        f"{rows[0]['bytes_from_gpu_per_step']:,} B back (state, events, p_correct, mastery)"
    )
    lines += [f"skipped: {r['backend']} B={r['batch']} ({r['reason']})" for r in results.get("step_skipped", [])]
    return lines


def run_bench(bench: BenchPlan) -> dict:
    """Every measurement of the plan; the results are also written to ``out/results.json``."""
    plan = FULL if bench.full else QUICK
    backend = resolve_backend_name(bench.backend)
    if bench.bootstrap and not bench.skip_e2e:  # before minutes of step measurements
        asyncio.run(reachable(bench.bootstrap, bench.connect_timeout_s))
    out_dir = Path(bench.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.set_num_threads(
        bench.threads
    )  # 1 by default, as serve: one core for the model, the other for broker and Redis
    if bench.checkpoint and bench.model:
        raise ConfigError("give --checkpoint or --model, not both")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = (
            load_checkpoint(bench.checkpoint) if bench.checkpoint else default_checkpoint(Path(tmp), bench.model)
        )
        shadow = default_checkpoint(Path(tmp) / "shadow", bench.model, seed=1) if bench.shadow else None
        results: dict = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread",
            "model": checkpoint.version,
            "model_name": checkpoint.model.name,
            "backend": backend,
            "batch": bench.batch,
        }
        results["step"] = step_throughput(
            checkpoint.model, [b for b in ("eager", "cpu") if b in available_backends()], plan["batches"]
        )
        if "cuda" in available_backends():
            cuda_rows, results["step_skipped"] = cuda_step_throughput(checkpoint.model)
            results["step"] += cuda_rows
            results["gpu"] = f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
        results["end_to_end"] = []
        if not bench.skip_e2e:
            redis_url = bench.redis_url
            redis_nodes = start_replicated(Path(tmp) / "redis", bench.redis_replicas) if bench.redis_replicas else []
            if redis_nodes:
                redis_url = redis_nodes[0].url
                results["redis"] = (
                    f"a primary and {bench.redis_replicas} replica(s) of our own, no persistence; "
                    f"serve WAITs for {bench.redis_replicas} before each commit"
                )
            try:
                run_end_to_end(bench, plan, results, checkpoint, shadow, backend, redis_url)
            finally:
                for node in redis_nodes:
                    node.stop()
    results["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def start_broker(kind: str) -> KafkaBroker | KafkaCluster | EmbeddedBroker | None:
    """Our own broker of ``kind`` (``broker_plan``'s names), started; None for "external"."""
    if kind == "external":
        return None
    if kind.startswith("kafka-"):
        return KafkaCluster(int(kind.split("-")[1])).start()
    return (KafkaBroker() if kind == "kafka" else EmbeddedBroker()).start()


def broker_pids(broker: KafkaBroker | KafkaCluster | EmbeddedBroker | None) -> tuple[int, ...]:
    processes = (
        [n.process for n in broker.nodes.values()]
        if isinstance(broker, KafkaCluster)
        else [broker.process if broker else None]
    )
    return tuple(p.pid for p in processes if p is not None)


def run_end_to_end(
    bench: BenchPlan,
    plan: dict[str, Any],
    results: dict,
    checkpoint: Checkpoint,
    shadow: Checkpoint | None,
    backend: str,
    redis_url: str,
) -> None:
    """Every variant on every broker of the plan, appended to ``results["end_to_end"]``."""
    for broker_kind, variants in broker_plan(
        bench.bootstrap, bench.broker, bench.shadow, bench.nodes, bench.alternatives
    ):
        broker = start_broker(broker_kind)
        try:
            bootstrap = broker.bootstrap if broker else bench.bootstrap
            assert bootstrap is not None and checkpoint.path is not None
            target = Target(
                bootstrap,
                redis_url,
                Path(checkpoint.path),
                backend,
                bench.batch,
                broker=broker_kind,
                broker_pids=broker_pids(broker),
                shadow=Path(shadow.path) if shadow is not None and shadow.path else None,
                redis_min_replicas=bench.redis_replicas,
            )
            if (
                broker is not None
            ):  # a fresh JVM: the first variant would pay for its warm-up (3x the broker CPU per event)
                print(
                    f"end to end on {broker_kind}: warming the broker up ({WARM_UP_EVENTS} events, not reported)",
                    flush=True,
                )
                run_variant(
                    target,
                    "stream-kt",
                    bench_students(checkpoint.vocab, WARM_UP_EVENTS),
                    latency_seconds=0.0,
                    progress=False,
                )
            for variant in variants:
                events = {"recompute": plan["recompute_events"], "naive": plan["naive_events"]}.get(
                    variant, bench.events or plan["events"]
                )
                print(f"end to end on {broker_kind}: {variant} ({events} events)", flush=True)
                results["end_to_end"].append(
                    run_variant(target, variant, bench_students(checkpoint.vocab, events), plan["latency_s"])
                )
        finally:
            if broker:
                broker.close()


async def reachable(bootstrap: str, timeout_s: float) -> None:
    """``StreamError`` in one line unless a Kafka broker answers at ``bootstrap`` within ``timeout_s``."""
    async with kafka_io.connecting(bootstrap, timeout_s):
        await kafka_io.check_reachable(bootstrap)


def summarise(results: dict) -> dict:
    """The one-line JSON summary: step throughput, and the end-to-end headline of each broker."""
    backend = results["backend"]
    summary = {
        "backend": backend,
        "step_throughput_b256": next(
            (
                r["student_steps_per_s"]
                for r in results["step"]
                if r["batch"] == 256 and r["backend"] == ("cpu" if backend != "cuda" else "cuda")
            ),
            None,
        ),
    }
    rows = results["end_to_end"]
    if rows:
        main_broker = rows[0]["broker"]  # the first broker run gets every variant
        by_variant = {r["variant"]: r for r in rows if r["broker"] == main_broker}
        summary.update(
            broker=main_broker,
            redis_min_replicas=by_variant["stream-kt"].get("redis_min_replicas", 0),
            **e2e_summary(by_variant["stream-kt"]),
        )
        ours = by_variant["stream-kt"]["events_per_s"]
        if "handwritten" in by_variant:  # not with --stream-kt-only
            summary.update(
                handwritten_events_per_s=by_variant["handwritten"]["events_per_s"],
                handwritten_us_per_event=by_variant["handwritten"]["drain_cpu_us_per_event"],
                naive_events_per_s=by_variant["naive"]["events_per_s"],
                recompute_events_per_s=by_variant["recompute"]["events_per_s"],
                speedup_vs_handwritten=round(ours / by_variant["handwritten"]["events_per_s"], 2),
                speedup_vs_naive=round(ours / by_variant["naive"]["events_per_s"], 1),
            )
        if "stream-kt+shadow" in by_variant:  # what a shadow challenger adds: processor CPU per event, throughput
            shadowed, alone = by_variant["stream-kt+shadow"], by_variant["stream-kt"]
            if shadowed["drain_cpu_us_per_event"] is not None and alone["drain_cpu_us_per_event"] is not None:
                summary["shadow_added_cpu_us_per_event"] = round(
                    shadowed["drain_cpu_us_per_event"] - alone["drain_cpu_us_per_event"], 1
                )
            summary["shadow_events_per_s"] = shadowed["events_per_s"]
        for row in rows:
            if row["broker"] != main_broker:
                summary[row["broker"]] = e2e_summary(row)
    cuda_rows = [r for r in results["step"] if r["backend"] == "cuda"]
    if cuda_rows:
        peak = max(cuda_rows, key=lambda r: r["student_steps_per_s"])
        summary.update(cuda_peak_student_steps_per_s=peak["student_steps_per_s"], cuda_peak_batch=peak["batch"])
    summary["seconds"] = results["seconds"]
    return summary
