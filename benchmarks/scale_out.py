"""Scale-out: events/s of 1, 2 and 3 ``stream-kt serve`` processes in one consumer group, same replay.

For each process count k, on fresh topics (``--partitions``, default 6), group and key prefix:

1. ``--events`` answer events of synthetic students are produced first (``replay.send_events``).
2. k ``stream-kt serve`` processes are launched together (``tools.processes.ServeProcess``).
3. A follower (``follow.follow_outputs``) reads the output topic until every event is answered.

``events_per_s`` = events / (last output - first output), as in ``stream_kt.tools.bench.end_to_end``;
``wall_events_per_s`` counts from the launch, so it includes start-up (imports, the
TorchScript trace) and the group join.  Each process's share comes from its
``stopped:`` summary line.  Scaling stops at the machine's cores: the processes, the
broker, Redis and this follower share them (``cores`` in the report).

    python -m benchmarks.scale_out --events 20000 [--processes 1 2 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import tempfile
import time
import uuid
from pathlib import Path

from stream_kt.checkpoint import load_checkpoint
from stream_kt.progress import progress_bar
from stream_kt.service.exceptions import StreamError
from stream_kt.service.kafka_io import ensure_topics
from stream_kt.settings import StreamSettings
from stream_kt.tools.bench.workload import bench_students, default_checkpoint
from stream_kt.tools.brokers import EmbeddedBroker
from stream_kt.tools.follow import FollowTally, follow_outputs, now_ms
from stream_kt.tools.inspect_state import delete_keys_with_prefix
from stream_kt.tools.processes import ServeProcess
from stream_kt.tools.replay import event_order, send_events

SUMMARY = re.compile(r"stopped: (\d+) events in")


def serve_settings(args: argparse.Namespace, bootstrap: str, run: str, checkpoint: Path) -> StreamSettings:
    """What each ``serve`` of a run gets: the run's topics, group and key prefix, the
    arguments' model, backend, batch."""
    return StreamSettings(
        bootstrap=bootstrap, redis_url=args.redis, checkpoint=str(checkpoint), backend=args.backend,
        in_topic=f"{run}.answers", out_topic=f"{run}.mastery", dlq_topic=f"{run}.dlq",
        group_id=f"{run}-group", key_prefix=run, batch_size=args.batch, partitions=args.partitions,
        metrics_port=0,  # several on one machine: no shared port
    )  # fmt: skip


async def run_once(
    args: argparse.Namespace, bootstrap: str, checkpoint: Path, students, order, processes: int, log_dir: Path
) -> dict:
    run = f"scale-{processes}-{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, [f"{run}.answers", f"{run}.mastery", f"{run}.dlq"], args.partitions)
    sent = await send_events(bootstrap, f"{run}.answers", students, order, progress=not args.quiet)
    tally = FollowTally(since_ms=sent.first_send_ms, expected=sent.sent)
    launched_ms = now_ms()
    settings = serve_settings(args, bootstrap, run, checkpoint)
    members = [ServeProcess(settings, log_dir / f"{run}-{n}.log").start() for n in range(processes)]
    bar = progress_bar(
        total=sent.sent,
        desc=f"{processes} process{'es' if processes > 1 else ''}",
        unit="event",
        unit_scale=True,
        disable=args.quiet,
        mininterval=0.5,
    )

    def progress(t: FollowTally) -> None:
        bar.update(t.answered - bar.n)

    try:
        await follow_outputs(
            bootstrap, f"{run}.mastery", tally, dlq_topic=f"{run}.dlq", timeout_s=args.timeout_s, on_update=progress
        )
    finally:
        bar.close()
        shares = []
        for member in members:
            member.signal(signal.SIGTERM)
            try:
                match = SUMMARY.search(member.wait_line("stopped: ", timeout_s=60))
            except StreamError:  # it died or hung: no share to report
                match = None
            member.stop()
            shares.append(int(match.group(1)) if match else None)
        await asyncio.to_thread(delete_keys_with_prefix, args.redis, run)  # it runs its own event loop
    if tally.answered < sent.sent:
        raise SystemExit(
            f"{processes} processes: {sent.sent - tally.answered} of {sent.sent} events unanswered after "
            f"{args.timeout_s:.0f} s (logs in {log_dir})"
        )
    span_s = (tally.last_output_ms - tally.first_output_ms) / 1000
    return {
        "processes": processes,
        "events": sent.sent,
        "events_per_s": round(sent.sent / span_s, 1) if span_s > 0 else None,
        "wall_events_per_s": round(sent.sent / ((tally.last_output_ms - launched_ms) / 1000), 1),
        "first_output_after_s": round((tally.first_output_ms - launched_ms) / 1000, 2),
        "drain_s": round(span_s, 2),
        "events_per_process": shares,
        "duplicates": tally.duplicates,
    }


def table(rows: list[dict]) -> str:
    lines = [
        f"{'processes':>9}  {'events':>7}  {'events/s':>9}  {'wall ev/s':>9}  "
        f"{'1st out s':>9}  {'drain s':>7}  per process",
    ]
    for r in rows:
        lines.append(
            f"{r['processes']:>9}  {r['events']:>7}  {r['events_per_s'] or 0:>9,.0f}  {r['wall_events_per_s']:>9,.0f}  "
            f"{r['first_output_after_s']:>9.1f}  {r['drain_s']:>7.1f}  {r['events_per_process']}"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="stream-kt-scale-out-"))
    checkpoint_dir = Path(args.checkpoint) if args.checkpoint else default_checkpoint(work).path
    checkpoint = load_checkpoint(checkpoint_dir)
    students = bench_students(checkpoint.vocab, args.events, seed=args.seed)
    order = event_order(students, args.seed)[: args.events]
    broker = None if args.bootstrap else EmbeddedBroker(log_path=work / "broker.log").start()
    bootstrap = args.bootstrap or broker.bootstrap
    try:
        rows = [await run_once(args, bootstrap, Path(checkpoint_dir), students, order, k, work) for k in args.processes]
    finally:
        if broker is not None:
            broker.stop()
    return {
        "benchmark": "scale_out",
        "cores": os.cpu_count(),
        "model": checkpoint.version,
        "backend": args.backend,
        "batch": args.batch,
        "partitions": args.partitions,
        "students": len(students),
        "broker": "embedded (tansu)" if broker is not None else bootstrap,
        "results": rows,
        "logs": str(work),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000, help="answer events per run (default 20000)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3], help="process counts to run (default 1 2 3)")
    p.add_argument("--checkpoint", help="model (default: DKT hidden 128 over 124 skills, random weights)")
    p.add_argument("--bootstrap", help="Kafka HOST:PORT (default: start an embedded broker)")
    p.add_argument(
        "--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), help="Redis URL (env REDIS_URL)"
    )
    p.add_argument("--backend", default="cpu", help="serve --backend (default cpu: TorchScript)")
    p.add_argument("--batch", type=int, default=1024, help="serve --batch (default 1024, serve's)")
    p.add_argument("--partitions", type=int, default=6, help="input topic partitions (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--timeout-s", type=float, default=300.0, help="give up this long after a run's last send (default 300)"
    )
    p.add_argument("--out", help="also write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    started = time.monotonic()
    report = asyncio.run(main(arguments))
    report["seconds"] = round(time.monotonic() - started, 1)
    print(table(report["results"]))
    print(
        f"{report['cores']} cores shared by the processes, the broker, Redis and the follower; "
        f"model {report['model']}, backend {report['backend']}, B={report['batch']}"
    )
    if arguments.out:
        Path(arguments.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
