"""Where ``serve``'s CPU goes, per event: py-spy samples of one processor draining a backlog.

    python -m benchmarks.profile_engine [--events 60000] [--batch 1024] [--hidden 128] [--bootstrap H:P]
        [--compare BEFORE.json]

Starts Apache Kafka (or uses ``--bootstrap``), fills a fresh input topic with synthetic
answers, then runs one ``stream_kt.tools.bench.worker`` processor under ``py-spy record`` until it
has answered every event.  Each sample's stack is put in one bucket (the first rule
that matches a frame, innermost first: model step, Kafka consumer, Kafka producer,
Redis, state, event decoding, output encoding, ...) and the table gives each bucket's
share and its microseconds per event (the worker's CPU seconds / events, split by the
shares).  ``--compare`` also draws this profile under an earlier one's as a PNG beside
``--out``.  Needs ``py-spy`` (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stream_kt.service.kafka_io import ensure_topics
from stream_kt.tools.bench.end_to_end import Target, Worker
from stream_kt.tools.bench.report import plot_profiles
from stream_kt.tools.bench.workload import bench_students, default_checkpoint
from stream_kt.tools.brokers import KafkaBroker
from stream_kt.tools.replay import event_order, send_events

# (bucket, substrings of a frame "function (file:line)"): the innermost frame that matches one decides
BUCKETS = (
    ("model step", ("torch/", "backends/", "models/", "/jit/")),
    ("state (de)serialisation", ("service/state.py", "numpy/")),
    ("Redis client", ("redis/", "hiredis", "redis_store.py")),
    ("Kafka consumer", ("aiokafka/consumer", "aiokafka/record", "aiokafka/protocol/fetch")),
    ("Kafka producer", ("aiokafka/producer", "kafka_io.py")),
    ("Kafka client (network, protocol)", ("aiokafka/",)),
    ("event decoding and validation", ("service/events.py", "decode_answer", "msgpack")),
    ("batching and rounds", ("service/batcher.py",)),
    ("processor logic", ("service/processor.py", "service/batch.py", "service/migration.py")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
)


def bucket(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for name, patterns in BUCKETS:
            if any(p in frame for p in patterns):
                return name
    return "other"


def summarise(raw: Path, events: int, cpu_s: float) -> list[dict]:
    """Rows of the profile table from py-spy's raw (collapsed) output."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        if any("idle" in f for f in frames[-1:]):
            continue
        counts[bucket(frames)] += int(n)
    total = sum(counts.values()) or 1
    us_per_event = 1e6 * cpu_s / max(events, 1)
    return [
        {"bucket": name, "share": round(n / total, 3), "us_per_event": round(us_per_event * n / total, 1)}
        for name, n in counts.most_common()
    ]


async def fill(bootstrap: str, topic: str, vocab, events: int) -> int:
    students = bench_students(vocab, events)
    order = event_order(students, 0)
    await ensure_topics(bootstrap, [topic], 6)
    result = await send_events(bootstrap, topic, students, order, progress=False)
    return result.sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=128, help="DKT hidden size (and embedding)")
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--bootstrap", help="a running broker (default: start Apache Kafka)")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", default="benchmarks/results/profile.json")
    parser.add_argument(
        "--compare", help="an earlier profile.json: both are drawn as stacked bars in a PNG next to --out"
    )
    parser.add_argument("--raw", help="also keep py-spy's raw stacks here (one collapsed stack a line)")
    args = parser.parse_args()
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        print("profile_engine: needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    broker = None if args.bootstrap else KafkaBroker().start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = default_checkpoint(Path(tmp), hidden_size=args.hidden)
            assert checkpoint.path is not None
            worker = Worker(Target(bootstrap, args.redis, Path(checkpoint.path), args.backend, args.batch), "stream-kt")
            sent = asyncio.run(fill(bootstrap, worker.in_topic, checkpoint.vocab, args.events))
            raw = Path(tmp) / "profile.txt"
            py_spy_record = [
                py_spy,
                "record",
                "--format",
                "raw",
                "--rate",
                str(args.rate),
                "--output",
                str(raw),
                "--nonblocking",
                "--",
            ]
            command = py_spy_record + worker.command() + ["--stop-after", str(sent)]
            started = time.monotonic()
            done = subprocess.run(command, capture_output=True, text=True, env=worker.environ())
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                print(f"profile_engine: the worker failed ({done.returncode}): {done.stderr[-2000:]}", file=sys.stderr)
                return 1
            stats = json.loads(lines[-1])
            rows = summarise(raw, stats["events_in"], stats["cpu_s"])
            if args.raw:
                shutil.copy(raw, args.raw)
    finally:
        if broker is not None:
            broker.close()
    result = {
        "events": stats["events_in"],
        "batch": args.batch,
        "hidden": args.hidden,
        "backend": args.backend,
        "cpu_s": round(stats["cpu_s"], 2),
        "us_per_event": round(1e6 * stats["cpu_s"] / max(stats["events_in"], 1), 1),
        "seconds": round(time.monotonic() - started, 1),
        "buckets": rows,
    }
    print(f"{'bucket':<36} {'share':>6} {'us/event':>9}")
    for row in rows:
        print(f"{row['bucket']:<36} {row['share']:>6.1%} {row['us_per_event']:>9.1f}")
    print(f"{'all (the worker CPU / events)':<36} {'':>6} {result['us_per_event']:>9.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        label = "B={}, H={}, {} events"
        png = plot_profiles(
            [
                ("before: " + label.format(before["batch"], before["hidden"], before["events"]), before),
                ("now: " + label.format(args.batch, args.hidden, result["events"]), result),
            ],
            Path(args.out).with_suffix(".png"),
        )
        print(f"plot: {png}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
