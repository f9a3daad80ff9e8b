"""``stream-kt bench``: step throughput per backend, end to end on each broker, and the alternatives side by side
(``stream_kt.tools.bench``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from stream_kt.backends import BACKEND_CHOICES
from stream_kt.commands.common import POSITIVE_INT, json_option
from stream_kt.commands.settings_flags import settings_from_options, settings_options
from stream_kt.models import MODELS
from stream_kt.settings import StreamSettings

DEFAULT_OUT = "bench-results"
RECORD = Path("benchmarks") / "results"  # the committed record, in the checkout bench --update-record runs from


@click.command("bench", help="benchmark the model step and the whole pipeline against the alternatives")
@settings_options("redis_url", "kafka_connect_timeout_s")
@click.option("--bootstrap", help="Kafka HOST:PORT of a broker of yours (default: start our own, see --broker)")
@click.option(
    "--broker",
    type=click.Choice(("auto", "both", "kafka", "embedded")),
    default="auto",
    show_default=True,
    help="brokers to start for the end-to-end runs: both (Apache Kafka, then the embedded tansu), kafka, embedded; "
    "auto: both where Java can run Kafka, else embedded",
)
@click.option(
    "--checkpoint",
    metavar="DIR",
    help="checkpoint directory of the model to benchmark (default: a DKT with hidden size 128 over "
    "124 skills, random weights)",
)
@click.option(
    "--model",
    type=click.Choice(sorted(MODELS)),
    help="instead of --checkpoint: this model in its default configuration over 124 skills, random weights",
)
@click.option(
    "--threads",
    type=POSITIVE_INT,
    default=1,
    show_default=True,
    help="torch CPU threads (1, as serve; on a GPU host more threads pack the batch faster)",
)
@click.option(
    "--backend",
    type=click.Choice(BACKEND_CHOICES),
    default="auto",
    show_default=True,
    help="backend of the stream-kt end-to-end run; cuda also sweeps B from 64 to 65,536 with and without CUDA graphs",
)
@click.option(
    "--batch",
    type=POSITIVE_INT,
    default=StreamSettings.model_fields["batch_size"].default,
    show_default=True,
    help="fixed batch shape B of the stream-kt run (serve's default)",
)
@click.option("--events", type=POSITIVE_INT, help="events for the stream-kt throughput run")
@click.option("--skip-e2e", is_flag=True, help="only the model step benchmark")
@click.option(
    "--nodes",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="Apache Kafka nodes to start for the end-to-end runs: 3 is a KRaft cluster, topics with three replicas, "
    "two in sync (Kafka only, not with --bootstrap)",
)
@click.option(
    "--redis-replicas",
    type=click.IntRange(0, 4),
    default=0,
    show_default=True,
    help="start a Redis primary of our own with this many replicas (instead of --redis) "
    "and run stream-kt with KT_REDIS_MIN_REPLICAS at it: WAIT before each commit",
)
@click.option(
    "--stream-kt-only",
    is_flag=True,
    help="end to end: stream-kt alone, without the hand-written loop, recompute and naive",
)
@click.option(
    "--shadow",
    is_flag=True,
    help="also run stream-kt with a shadow challenger (the model with other weights) "
    "and report the CPU per event it adds",
)
@click.option("--full", is_flag=True, help="more batch sizes and events (longer)")
@click.option(
    "--out",
    help=f"directory for results.json and the PNG plots (default: {DEFAULT_OUT}/ in the current directory; "
    "git ignores it in a checkout)",
)
@click.option(
    "--update-record",
    is_flag=True,
    help="maintainers: write the committed record, benchmarks/results/ of the checkout in the current directory, "
    "instead (a whole run: not with --skip-e2e or --out)",
)
@json_option
def bench(
    bootstrap: str | None,
    broker: str,
    checkpoint: str | None,
    model: str | None,
    threads: int,
    backend: str,
    batch: int,
    events: int | None,
    skip_e2e: bool,
    nodes: int,
    redis_replicas: int,
    stream_kt_only: bool,
    shadow: bool,
    full: bool,
    out: str | None,
    update_record: bool,
    as_json: bool,
    **options: Any,
) -> int:
    from stream_kt.tools.bench.report import plot, table
    from stream_kt.tools.bench.run import BenchPlan, cuda_notes, run_bench, summarise

    if update_record and (skip_e2e or out):
        raise click.UsageError(
            "--update-record writes the whole committed record (the README cites its end-to-end figures): "
            "not with --skip-e2e or --out"
        )
    if nodes > 1 and (bootstrap or broker == "embedded"):
        raise click.UsageError(
            f"--nodes {nodes} starts an Apache Kafka cluster of our own: not with --bootstrap or --broker embedded"
        )
    if update_record and (nodes > 1 or redis_replicas or stream_kt_only):
        raise click.UsageError(
            "--update-record writes the committed single-node record: not with --nodes, "
            "--redis-replicas or --stream-kt-only"
        )
    if update_record and not RECORD.is_dir():
        raise click.UsageError(
            f"--update-record writes {RECORD}/ of the checkout in the current directory, and there is none here: "
            "run it from the repository's root"
        )
    out_dir = RECORD if update_record else Path(out or DEFAULT_OUT)
    settings = settings_from_options(options)
    plan = BenchPlan(
        settings.redis_url,
        backend,
        batch,
        bootstrap,
        broker,
        checkpoint,
        model,
        threads,
        events,
        skip_e2e,
        full,
        out_dir,
        settings.kafka_connect_timeout_s,
        shadow,
        nodes=nodes,
        redis_replicas=redis_replicas,
        alternatives=not stream_kt_only,
    )
    results = run_bench(plan)
    print(table(results))
    for line in cuda_notes(results):
        print(line)
    print(f"results: {out_dir / 'results.json'}")
    for path in plot(results, out_dir):
        print(f"plot: {path}")
    summary = summarise(results)
    if "shadow_events_per_s" in summary:
        print(
            f"a shadow challenger adds {summary.get('shadow_added_cpu_us_per_event', '?')} us of processor CPU per "
            f"event ({summary['shadow_events_per_s']:,.0f} events/s with it, {summary['events_per_s']:,.0f} without)"
        )
    print(json.dumps(summary))  # the last line, with or without --json
    return 0


COMMANDS = (bench,)
