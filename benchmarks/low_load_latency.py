"""Latency at low load: B = 64 (the old default) and B = 1024 (the default) at the same offered rates.

``stream-kt bench`` measures latency at 10% of each batch size's own maximum, so B = 1024
is measured at about three times B = 64's rate, over a few seconds each: its p99 then
moves by 20 ms from run to run.  This benchmark holds the rate fixed instead and repeats:

- one Apache Kafka broker of our own, Redis at ``--redis``, DKT (hidden 128, random weights,
  124 skills), the ``stream-kt`` variant of ``stream_kt.tools.bench`` (one torch thread);
- for each round, each rate of ``--rates`` and each batch size of ``--batches`` (the order
  alternating from round to round): a fresh processor on fresh topics and key prefix,
  ``--warm-s`` seconds of paced events not measured, then ``--seconds`` measured;
- each answer's latency (output received - the event's ``ts``, the wall clock at send)
  split at the output's Kafka timestamp: the processor's part (fetch, batch, step, state
  write, hand-over to the producer) and delivery (the producer's send, the broker, the
  follower's fetch).

Prints p50/p95/p99 per round and over all rounds pooled, writes the JSON and a PNG of the
per-round p99 (``--out``).

    python -m benchmarks.low_load_latency [--rates 330 1000] [--rounds 3] [--seconds 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from stream_kt.data.vocab import Vocabulary
from stream_kt.service.kafka_io import ensure_topics
from stream_kt.settings import StreamSettings
from stream_kt.tools.bench.end_to_end import Target, Worker, send_and_follow
from stream_kt.tools.bench.run import broker_pids, start_broker
from stream_kt.tools.bench.workload import bench_students, default_checkpoint
from stream_kt.tools.follow import FollowTally, now_ms, percentiles_ms
from stream_kt.tools.inspect_state import delete_keys_with_prefix
from stream_kt.tools.replay import event_order

RAW = ("latencies_ms", "processor_ms", "delivery_ms")  # per answer: pooled, not written


def measure(target: Target, vocab: Vocabulary, rate: float, warm_s: float, seconds: float, seed: int) -> dict:
    """One fresh processor at ``target.batch_size``: warm up at ``rate``, then measure ``seconds`` at it."""
    worker = Worker(target, "stream-kt")
    asyncio.run(
        ensure_topics(target.bootstrap, [worker.in_topic, worker.out_topic, worker.dlq_topic], target.partitions)
    )
    worker.start()
    try:
        tallies = []
        for phase, span in (("warm", warm_s), ("measured", seconds)):
            count = max(50, int(rate * span))
            students = bench_students(vocab, count, seed=seed + (phase == "measured"))
            order = event_order(students, seed)[:count]
            tally = FollowTally(since_ms=now_ms())
            summary = asyncio.run(worker.watch(send_and_follow(worker, students, order, rate, False, tally)))
            if summary["missing"]:
                raise RuntimeError(f"B = {target.batch_size} at {rate}/s: {summary['missing']} answers missing")
            tallies.append((tally, summary))
    finally:
        worker.stop()
        delete_keys_with_prefix(target.redis_url, worker.key_prefix)
    tally, summary = tallies[-1]
    delivery = [t - p for t, p in zip(tally.latencies_ms, tally.processed_ms, strict=True)]
    return {
        "batch": target.batch_size,
        "offered_per_s": rate,
        "sent_per_s": summary["sent_per_s"],
        "answers": tally.outputs,
        "latencies_ms": tally.latencies_ms,
        "processor_ms": tally.processed_ms,
        "delivery_ms": delivery,
        **percentiles_ms(tally.latencies_ms),
        "processor": percentiles_ms(tally.processed_ms),
        "delivery": percentiles_ms(delivery),
    }


def pooled(runs: list[dict]) -> dict:
    """Every round's answers together, and the spread of the per-round p99."""
    p99s = [r["p99_ms"] for r in runs]
    return {
        "rounds": len(runs),
        "answers": sum(r["answers"] for r in runs),
        **percentiles_ms([x for r in runs for x in r["latencies_ms"]]),
        "processor": percentiles_ms([x for r in runs for x in r["processor_ms"]]),
        "delivery": percentiles_ms([x for r in runs for x in r["delivery_ms"]]),
        "p99_per_round_ms": p99s,
        "p99_median_of_rounds_ms": float(np.median(p99s)),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = result["rates"]
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        for n, batch in enumerate(result["batches"]):
            runs = [r for r in result["runs"] if r["offered_per_s"] == rate and r["batch"] == batch]
            p50 = [r["p50_ms"] for r in runs]
            p99 = [r["p99_ms"] for r in runs]
            x = np.arange(len(runs)) + 0.35 * n
            ax.bar(x, p99, width=0.35, label=f"B = {batch}: p99", alpha=0.6)
            ax.scatter(x, p50, marker="_", s=200, color="k", label="p50" if n == 0 else None)
        ax.set_title(f"{rate:g} events/s offered")
        ax.set_xlabel("round")
        ax.set_ylabel("latency, ms (produce to mastery received)")
        ax.set_xticks(np.arange(result["rounds"]) + 0.175, [str(i + 1) for i in range(result["rounds"])])
        ax.legend()
    fig.suptitle("Latency at low load: B at the same offered rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[330.0, 1000.0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, StreamSettings().batch_size])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warm-s", type=float, default=3.0, help="unmeasured seconds per run, first")
    parser.add_argument("--redis", default=StreamSettings.model_fields["redis_url"].default)
    parser.add_argument("--out", type=Path, default=Path("bench-results/low_load"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = default_checkpoint(Path(tmp))
        broker = start_broker("kafka")
        try:
            assert broker is not None and checkpoint.path is not None
            total = args.rounds * len(args.rates) * len(args.batches)
            for round_ in range(args.rounds):
                batches = args.batches if round_ % 2 == 0 else list(reversed(args.batches))
                for rate in args.rates:
                    for batch in batches:
                        target = Target(
                            broker.bootstrap,
                            args.redis,
                            Path(checkpoint.path),
                            "auto",
                            batch,
                            broker="kafka",
                            broker_pids=broker_pids(broker),
                        )
                        run = measure(target, checkpoint.vocab, rate, args.warm_s, args.seconds, seed=round_)
                        run["round"] = round_ + 1
                        runs.append(run)
                        print(
                            f"[{len(runs)}/{total}] round {round_ + 1}, {rate:g}/s, B = {batch}: "
                            f"p50/p95/p99 {run['p50_ms']}/{run['p95_ms']}/{run['p99_ms']} ms "
                            f"(processor p99 {run['processor']['p99_ms']}, delivery p99 {run['delivery']['p99_ms']}; "
                            f"{run['answers']} answers, {time.perf_counter() - started:.0f} s)",
                            flush=True,
                        )
        finally:
            if broker is not None:
                broker.close()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "rates": args.rates,
        "batches": args.batches,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warm_s": args.warm_s,
        "pooled": {
            f"{rate:g}/s, B = {batch}": pooled([r for r in runs if r["offered_per_s"] == rate and r["batch"] == batch])
            for rate in args.rates
            for batch in args.batches
        },
        "runs": [{k: v for k, v in r.items() if k not in RAW} for r in runs],
    }
    print("| rate | B | answers | p50 / p95 / p99 ms pooled | p99 per round | processor p99 | delivery p99 |")
    print("|---|---|---|---|---|---|---|")
    for name, row in result["pooled"].items():
        rate, batch = name.split(", B = ")
        print(
            f"| {rate} | {batch} | {row['answers']:,} | {row['p50_ms']:g} / {row['p95_ms']:g} / {row['p99_ms']:g} | "
            f"{', '.join(f'{p:g}' for p in row['p99_per_round_ms'])} | {row['processor']['p99_ms']:g} | "
            f"{row['delivery']['p99_ms']:g} |"
        )
    (args.out / "low_load_latency.json").write_text(json.dumps(result, indent=2))
    plot({**result, "runs": runs}, args.out / "low_load_latency.png")
    print(f"written: {args.out / 'low_load_latency.json'}, {args.out / 'low_load_latency.png'}")


if __name__ == "__main__":
    main()
