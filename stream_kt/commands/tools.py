"""Tools around the stream: replay (load generator), inspect (one student's state), demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import click

from stream_kt.checkpoint import load_checkpoint
from stream_kt.commands.common import POSITIVE_FLOAT, POSITIVE_INT, format_option, json_option
from stream_kt.commands.settings_flags import settings_from_options, settings_options
from stream_kt.data.readers import ITEM_COLUMNS
from stream_kt.errors import ConfigError
from stream_kt.settings import ENV, KAFKA_SECURITY, mask_url
from stream_kt.tools.demo import DEFAULT_LOCAL_REDIS, DemoOptions, run_demo
from stream_kt.tools.inspect_state import (
    count_keys_with_prefix,
    format_report,
    load_student,
    mastery_over_window,
    name_window,
    plot_mastery_heatmap,
    state_report,
)
from stream_kt.tools.replay import BURST_MS, event_order, load_replay_students, replay_and_follow


def follow_line(summary: dict, send_events_per_s: float | None = None) -> str:
    """What following the outputs found; where replay sent faster than serve answered, why the
    latency is mostly queueing."""
    latency = (
        "no outputs"
        if summary["p50_ms"] is None
        else f"event-to-mastery latency (event sent to its mastery received) p50 {summary['p50_ms']:.0f} ms, "
        f"p95 {summary['p95_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms"
    )
    answered_per_s = summary["events_per_s"]
    rate = f"{answered_per_s:,.0f} events/s end to end" if answered_per_s else "no end-to-end rate"
    line = (
        f"answered {summary['sent'] - summary['missing']} of {summary['sent']} events: "
        f"{summary['outputs']} mastery outputs, {summary['dead_lettered']} dead-lettered, "
        f"{summary['duplicates']} duplicates dropped, {summary['missing']} missing; {rate}; {latency}"
    )
    if send_events_per_s and answered_per_s and summary["p50_ms"] is not None and send_events_per_s > answered_per_s:
        line += (
            f"\n  replay sent {send_events_per_s:,.0f} events/s, faster than serve answered them "
            f"({answered_per_s:,.0f}/s), so that latency is mostly time queued behind earlier events, not the time to "
            f"process one; --rate below {answered_per_s:,.0f} measures latency at a load serve keeps up with"
        )
    return line


@click.command(help="send a data set's answers to the input topic as concurrent students")
@click.option(
    "--data", "paths", multiple=True, required=True, help="data file; repeat for several (e.g. train and test)"
)
@format_option
@click.option(
    "--item", type=click.Choice(ITEM_COLUMNS), default="skill_id", show_default=True, help="which id the events carry"
)
@click.option("--limit", type=POSITIVE_INT, help="send at most this many events")
@click.option("--rate", type=POSITIVE_FLOAT, help="events per second (default: as fast as possible)")
@click.option(
    "--burst-ms",
    type=POSITIVE_FLOAT,
    default=BURST_MS,
    show_default=True,
    help="with --rate, send this many ms of events at a time, one record batch per partition",
)
@click.option("--seed", type=int, default=0, show_default=True, help="interleaving of students without timestamps")
@click.option("--follow", is_flag=True, help="wait for every event's mastery output; report throughput and latency")
@click.option(
    "--follow-timeout-s",
    type=POSITIVE_FLOAT,
    default=300.0,
    show_default=True,
    help="give up this long after the last send",
)
@json_option
@settings_options(
    "bootstrap",
    "in_topic",
    "out_topic",
    "dlq_topic",
    "partitions",
    "fetch_wait_ms",
    "kafka_connect_timeout_s",
    *KAFKA_SECURITY,
)
def replay(
    paths: tuple[str, ...],
    fmt: str,
    item: str,
    limit: int | None,
    rate: float | None,
    burst_ms: float,
    seed: int,
    follow: bool,
    follow_timeout_s: float,
    as_json: bool,
    **options: Any,
) -> int:
    settings = settings_from_options(options)
    if settings.bootstrap == "embedded":
        raise ConfigError("replay needs the bootstrap HOST:PORT of the broker serve reads from, not 'embedded'")
    students = load_replay_students(paths, fmt, item)
    order = event_order(students, seed)[:limit]
    result, tally = asyncio.run(
        replay_and_follow(
            settings,
            students,
            order,
            item=item,
            rate_per_s=rate,
            burst_ms=burst_ms,
            follow=follow,
            timeout_s=follow_timeout_s,
        )
    )
    print(
        f"sent {result.sent} events ({result.students} students) in {result.seconds:.1f} s "
        f"({result.events_per_s:,.0f} events/s)"
    )
    report: dict = {
        "sent": result.sent,
        "students": result.students,
        "send_seconds": round(result.seconds, 3),
        "send_events_per_s": round(result.events_per_s, 1),
    }
    complete = True
    if tally is not None:
        summary = tally.summary(result.first_send_ms)
        report.update(summary)
        print(follow_line(summary, result.events_per_s))
        complete = summary["missing"] == 0
        if not complete:
            print(
                f"stream-kt replay: {summary['missing']} events unanswered {follow_timeout_s:.0f} s after the last "
                f"send (is serve running on {settings.in_topic}?)",
                file=sys.stderr,
            )
    if as_json:
        print(json.dumps(report))
    return 0 if complete else 1


@click.command(help="show one student's state: recent answers and mastery per skill")
@click.argument("student")
@settings_options("redis_url", "key_prefix", "redis_cluster")
@json_option
@click.option("--plot", metavar="FILE.png", help="write a skills x interactions heatmap of mastery")
@click.option(
    "--checkpoint",
    metavar="DIR",
    help="checkpoint directory of the model for --plot and names (default: the one serve recorded in Redis)",
)
@click.option("--top", type=POSITIVE_INT, default=10, show_default=True, help="show the strongest and weakest N skills")
def inspect(student: str, as_json: bool, plot: str | None, checkpoint: str | None, top: int, **options: Any) -> int:
    settings = settings_from_options(options)
    state, vocab, recorded_checkpoint = asyncio.run(load_student(settings, student))
    model = None
    source = checkpoint or (recorded_checkpoint if plot else None)
    if source:
        model = load_checkpoint(source)
        if vocab is None and model.version == state.model_version:
            name_window(state, model.vocab)
        vocab = vocab or model.vocab
    report = state_report(state, vocab)
    if plot:
        if model is None:
            raise ConfigError(
                "--plot needs the model: "
                f"no checkpoint recorded for {state.model_version} in Redis, pass --checkpoint DIR"
            )
        history, positions = mastery_over_window(model.model, model.vocab, state.window, state.questions)
        report["plot"] = str(plot_mastery_heatmap(plot, state, model.vocab, history, positions, model.version))
    if as_json:
        print(json.dumps(report))
    else:
        print(format_report(report, top=top))
        if plot:
            print(f"wrote mastery heatmap to {report['plot']}")
    return 0


@click.command(help="the whole pipeline on one machine: broker, Redis, model, serve, replay")
@click.option(
    "--checkpoint",
    "setting_checkpoint",
    metavar="DIR",
    help="checkpoint directory to serve (env KT_CHECKPOINT, as serve; default: train a small DKT first)",
)
@click.option("--data", help="train on (and replay held-out students of) this file instead of synthetic students")
@format_option
@click.option("--item", type=click.Choice(ITEM_COLUMNS), default="skill_id", show_default=True)
@settings_options("bootstrap", "redis_url", "kafka_connect_timeout_s")
@click.option(
    "--metrics-port",
    "setting_metrics_port",
    metavar="PORT",
    help="serve's /metrics, /healthz and /readyz; 0 = any free port (env KT_METRICS_PORT, default 9108)",
)
@click.option(
    "--students", type=POSITIVE_INT, default=DemoOptions.students, show_default=True, help="students to replay"
)
@click.option("--rate", type=POSITIVE_FLOAT, help="events per second (default: as fast as possible)")
@click.option(
    "--train-students",
    type=POSITIVE_INT,
    default=DemoOptions.train_students,
    show_default=True,
    help="synthetic training students",
)
@click.option("--epochs", type=POSITIVE_INT, default=DemoOptions.epochs, show_default=True, help="most training epochs")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="the simulated students, the training run and the interleaving of replayed students",
)
@click.option("--out", help="directory for the checkpoint and logs (default: a new temporary directory, kept)")
@click.option(
    "--follow-timeout-s",
    type=POSITIVE_FLOAT,
    default=DemoOptions.follow_timeout_s,
    show_default=True,
    help="give up waiting for answers this long after the last send",
)
@click.option(
    "--delete-state",
    is_flag=True,
    help="delete the demo's Redis keys before exiting (default: keep them for stream-kt inspect; "
    "the demo says how to remove them)",
)
@json_option
def demo(
    data: str | None,
    fmt: str,
    item: str,
    students: int,
    rate: float | None,
    train_students: int,
    epochs: int,
    seed: int,
    out: str | None,
    follow_timeout_s: float,
    delete_state: bool,
    as_json: bool,
    **options: Any,
) -> int:
    # the broker: the flag or KAFKA_BOOTSTRAP_SERVERS, else the embedded one; Redis: the flag (it must answer),
    # else REDIS_URL or the local default if it answers, else a redis-server of the demo's own
    bootstrap_given = options["setting_bootstrap"] is not None or ENV["bootstrap"] in os.environ
    redis_given = options["setting_redis_url"] is not None
    settings = settings_from_options(options)
    run = DemoOptions(
        checkpoint=settings.checkpoint or None,
        data=data,
        fmt=fmt,
        item=item,
        bootstrap=settings.bootstrap if bootstrap_given else None,
        redis=settings.redis_url if redis_given else None,
        default_redis=settings.redis_url,
        students=students,
        rate=rate,
        train_students=train_students,
        epochs=epochs,
        seed=seed,
        out=out,
        follow_timeout_s=follow_timeout_s,
        delete_state=delete_state,
        metrics_port=settings.metrics_port,
        kafka_connect_timeout_s=settings.kafka_connect_timeout_s,
    )

    def say(text: str) -> None:
        print(text, file=sys.stderr if as_json else sys.stdout, flush=True)

    result = run_demo(run, say, follow_line)
    sent, missing = result.replay.sent, result.summary["missing"]
    say(
        f"all {sent} events answered."
        if result.complete
        else f"{missing} of {sent} events unanswered after {follow_timeout_s:.0f} s"
    )
    prefix, redis_url = result.settings.key_prefix, result.settings.redis_url
    if delete_state:
        say(f"the demo's Redis keys ({prefix}:*) are deleted on exit")
    elif result.own_redis:
        say(
            "this demo's Redis stops on exit; run Redis at 127.0.0.1:6379 (or pass --redis) "
            "to inspect students afterwards"
        )
    else:
        say(left_in_redis(redis_url, prefix, count_keys_with_prefix(redis_url, prefix)))
        redis_flag = "" if redis_url == DEFAULT_LOCAL_REDIS else f" --redis {mask_url(redis_url)}"
        say(f"try:  stream-kt inspect {result.busiest[0]}{redis_flag} --key-prefix {prefix} --plot mastery.png")
    say(f"checkpoint and logs: {result.work_dir}")
    if as_json:
        print(
            json.dumps(
                {
                    **result.summary,
                    "students": result.replay.students,
                    "send_events_per_s": round(result.replay.events_per_s, 1),
                    "key_prefix": prefix,
                    "redis": redis_url,
                    "metrics_port": result.settings.metrics_port,
                    "checkpoint": str(result.checkpoint),
                    "all_answered": result.complete,
                    "online_auc": result.quality.get("auc"),
                    "online_scored": result.quality.get("count", 0),
                }
            )
        )
    return 0 if result.complete else 1


def left_in_redis(redis_url: str, prefix: str, count: int) -> str:
    """What the demo leaves in a Redis it did not start, and how to remove it.

    The demo keeps its keys by default, so its closing ``stream-kt inspect`` hint works;
    they sit under a prefix of their own (one per run) and never expire.
    """
    where = mask_url(redis_url)
    return (
        f"left in Redis at {where}: {count} keys under {prefix}:* (each replayed student's state and the served "
        f"model's vocabulary), kept for stream-kt inspect; nothing expires them. Remove them:  redis-cli -u {where} "
        f"--scan --pattern '{prefix}:*' | xargs redis-cli -u {where} del   (or run the demo with --delete-state)"
    )


COMMANDS = (replay, inspect, demo)
