"""``stream-kt bench``: step throughput per backend, end to end, and the alternatives side by side."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from stream_kt.backends import BACKEND_CHOICES, available_backends, resolve_backend_name
from stream_kt.commands.offline import positive_int
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.split import split_students
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import Vocabulary
from stream_kt.errors import ConfigError
from stream_kt.models import MODELS, build_model
from stream_kt.tools.brokers import EmbeddedBroker, KafkaBroker, kafka_unavailable
from stream_kt.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

QUICK = {"batches": [1, 8, 32, 64, 128, 256, 512], "events": 40_000, "naive_events": 3_000, "recompute_events": 8_000, "latency_s": 5.0}
FULL = {"batches": [1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048], "events": 200_000, "naive_events": 10_000, "recompute_events": 30_000, "latency_s": 15.0}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the model step and the whole pipeline against the alternatives")
    p.add_argument("--bootstrap", help="Kafka HOST:PORT of a broker of yours (default: start our own, see --broker)")
    p.add_argument(
        "--broker",
        choices=("auto", "both", "kafka", "embedded"),
        default="auto",
        help="brokers to start for the end-to-end runs: both (Apache Kafka, then the embedded tansu), kafka, embedded; "
        "auto (default): both where Java can run Kafka, else embedded",
    )
    p.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), help="Redis URL (env REDIS_URL)")
    p.add_argument("--checkpoint", help="model to benchmark (default: a DKT with hidden size 128 over 124 skills, random weights)")
    p.add_argument("--model", choices=sorted(MODELS), help="instead of --checkpoint: this model in its default configuration over 124 skills, random weights")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1, as serve; on a GPU host more threads pack the batch faster)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="backend of the stream-kt end-to-end run (default auto); cuda also sweeps B from 64 to 65,536 with and without CUDA graphs")
    p.add_argument("--batch", type=positive_int, default=64, help="fixed batch shape B of the stream-kt run (default 64)")
    p.add_argument("--events", type=positive_int, help="events for the stream-kt throughput run")
    p.add_argument("--skip-e2e", action="store_true", help="only the model step benchmark")
    p.add_argument("--full", action="store_true", help="more batch sizes and events (longer)")
    p.add_argument("--out", default="benchmarks/results", help="directory for results.json and the PNG plots")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_bench)


def default_checkpoint(directory: Path, model_name: str | None = None) -> Checkpoint:
    """DKT, hidden 128, 124 items (the ASSISTments 2009 skill count), or ``model_name`` at its
    default configuration over the same items: speed does not depend on the weights."""
    torch.manual_seed(0)
    vocab = Vocabulary("skill_id", tuple(str(i) for i in range(124)))
    if model_name is None:
        model = build_model("dkt", num_items=124, embed_dim=128, hidden_size=128).eval()
    else:
        model = build_model(model_name, num_items=124).eval()
    split = split_students(["x", "y"], seed=0, valid_fraction=0.5)
    name = "bench-dkt" if model_name is None else f"bench-{model_name}"
    return save_checkpoint(directory / name, model, vocab, split, {"note": "random weights for benchmarking"})


def bench_students(vocab: Vocabulary, events: int, seed: int = 0) -> list[StudentSequence]:
    """Synthetic students whose items are the checkpoint's own ids, about ``events`` answers in all."""
    students = generate(SyntheticConfig(students=max(10, events // 90), items=len(vocab), concepts=8, seed=seed))
    mapped = [StudentSequence(s.student_id, tuple(vocab.ids[int(i)] for i in s.items), s.correct) for s in students]
    out, total = [], 0
    for s in mapped:
        if total >= events:
            break
        out.append(s)
        total += len(s)
    return out


def broker_plan(args: argparse.Namespace) -> list[tuple[str, tuple[str, ...]]]:
    """(broker, variants) in run order: every variant on the first broker, stream-kt alone on the second."""
    every = ("stream-kt", "recompute", "naive")
    if args.bootstrap:
        return [("external", every)]
    kinds = {"both": ["kafka", "embedded"], "kafka": ["kafka"], "embedded": ["embedded"]}.get(args.broker)
    if kinds is None:  # auto
        reason = kafka_unavailable()
        if reason:
            print(f"bench: embedded broker only ({reason})", flush=True)
        kinds = ["embedded"] if reason else ["kafka", "embedded"]
    return [(kind, every if n == 0 else ("stream-kt",)) for n, kind in enumerate(kinds)]


def e2e_summary(row: dict) -> dict:
    """The headline figures of one end-to-end run: throughput, latency at half of it, costs per event."""
    half = next(l for l in row["latency"] if l["fraction"] == 0.5)
    return {
        "events_per_s": row["events_per_s"],
        "p50_ms": half["p50_ms"],
        "p99_ms": half["p99_ms"],
        "cpu_us_per_event": round(1000 * row["cpu_ms_per_event"], 1),
        "broker_cpu_us_per_event": row["broker_cpu_us_per_event"],
    }


def cuda_notes(results: dict) -> list[str]:
    """Lines under the table for a CUDA run: the card, and what one student-step copies each way."""
    rows = [r for r in results["step"] if r["backend"] == "cuda"]
    if not rows:
        return []
    lines = [f"gpu: {results['gpu']}; cuda-eager: the same step without CUDA graphs; cuda-f16: float16 mastery"]
    lines.append(f"copied per student-step: {rows[0]['bytes_to_gpu_per_step']:,} B to the GPU, {rows[0]['bytes_from_gpu_per_step']:,} B back (state, events, p_correct, mastery)")
    lines += [f"skipped: {r['backend']} B={r['batch']} ({r['reason']})" for r in results.get("step_skipped", [])]
    return lines


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.end_to_end import Target, run_variant
    from benchmarks.report import plot, table
    from benchmarks.step_throughput import cuda_step_throughput, step_throughput

    plan = FULL if args.full else QUICK
    backend = resolve_backend_name(args.backend)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)  # 1 by default, as serve: one core for the model, the other for broker and Redis
    if args.checkpoint and args.model:
        raise ConfigError("give --checkpoint or --model, not both")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = load_checkpoint(args.checkpoint) if args.checkpoint else default_checkpoint(Path(tmp), args.model)
        results: dict = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread",
            "model": checkpoint.version,
            "model_name": checkpoint.model.name,
            "backend": backend,
            "batch": args.batch,
        }
        results["step"] = step_throughput(checkpoint.model, [b for b in ("eager", "cpu") if b in available_backends()], plan["batches"])
        if "cuda" in available_backends():
            cuda_rows, results["step_skipped"] = cuda_step_throughput(checkpoint.model)
            results["step"] += cuda_rows
            results["gpu"] = f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
        results["end_to_end"] = []
        if not args.skip_e2e:
            for broker_kind, variants in broker_plan(args):
                broker = None if broker_kind == "external" else (KafkaBroker() if broker_kind == "kafka" else EmbeddedBroker()).start()
                try:
                    bootstrap = broker.bootstrap if broker else args.bootstrap
                    target = Target(bootstrap, args.redis, Path(checkpoint.path), backend, args.batch, broker=broker_kind, broker_pid=broker.process.pid if broker else None)
                    for variant in variants:
                        events = {"stream-kt": args.events or plan["events"], "recompute": plan["recompute_events"], "naive": plan["naive_events"]}[variant]
                        print(f"end to end on {broker_kind}: {variant} ({events} events)", flush=True)
                        results["end_to_end"].append(run_variant(target, variant, bench_students(checkpoint.vocab, events), plan["latency_s"]))
                finally:
                    if broker:
                        broker.close()
    results["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    for line in cuda_notes(results):
        print(line)
    for path in plot(results, out_dir):
        print(f"plot: {path}")
    summary = {"backend": backend, "step_throughput_b256": next((r["student_steps_per_s"] for r in results["step"] if r["batch"] == 256 and r["backend"] == ("cpu" if backend != "cuda" else "cuda")), None)}
    rows = results["end_to_end"]
    if rows:
        main_broker = rows[0]["broker"]  # the first broker run gets every variant
        by_variant = {r["variant"]: r for r in rows if r["broker"] == main_broker}
        summary.update(broker=main_broker, **e2e_summary(by_variant["stream-kt"]))
        summary.update(
            naive_events_per_s=by_variant["naive"]["events_per_s"],
            recompute_events_per_s=by_variant["recompute"]["events_per_s"],
            speedup_vs_naive=round(by_variant["stream-kt"]["events_per_s"] / by_variant["naive"]["events_per_s"], 1),
        )
        for row in rows:
            if row["broker"] != main_broker:
                summary[row["broker"]] = e2e_summary(row)
    cuda_rows = [r for r in results["step"] if r["backend"] == "cuda"]
    if cuda_rows:
        peak = max(cuda_rows, key=lambda r: r["student_steps_per_s"])
        summary.update(cuda_peak_student_steps_per_s=peak["student_steps_per_s"], cuda_peak_batch=peak["batch"])
    summary["seconds"] = results["seconds"]
    print(json.dumps(summary))
    return 0
