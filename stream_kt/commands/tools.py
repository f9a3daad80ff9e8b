"""Tools around the stream: replay (load generator), inspect (one student's state), demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from stream_kt.commands.offline import positive_int
from stream_kt.data.readers import ITEM_COLUMNS
from stream_kt.data.sequences import StudentSequence
from stream_kt.errors import ConfigError, DataError
from stream_kt.settings import StreamSettings, add_settings_arguments, settings_from_args
from stream_kt.service.exceptions import StreamError
from stream_kt.tools.follow import FollowTally, follow_outputs, now_ms
from stream_kt.tools.inspect_state import (
    StudentNotFound,
    delete_keys_with_prefix,
    format_report,
    load_student,
    mastery_over_window,
    plot_mastery_heatmap,
    state_report,
)
from stream_kt.service import kafka_io
from stream_kt.tools.replay import BURST_MS, ReplayResult, event_order, load_replay_students, send_events
from stream_kt.training.prepare import FORMAT_CHOICES, load_students

DEFAULT_LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="send a data set's answers to the input topic as concurrent students")
    p.add_argument("--data", action="append", required=True, help="data file; repeat for several (e.g. train and test)")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto")
    p.add_argument("--item", choices=ITEM_COLUMNS, default="skill_id", help="which id the events carry (default skill_id)")
    p.add_argument("--limit", type=positive_int, help="send at most this many events")
    p.add_argument("--rate", type=positive_float, help="events per second (default: as fast as possible)")
    p.add_argument("--burst-ms", type=positive_float, default=BURST_MS, help="with --rate, send this many ms of events at a time, one record batch per partition (default %(default)g)")
    p.add_argument("--seed", type=int, default=0, help="interleaving of students without timestamps")
    p.add_argument("--follow", action="store_true", help="wait for every event's mastery output; report throughput and latency")
    p.add_argument("--follow-timeout-s", type=positive_float, default=300.0, help="give up this long after the last send (default 300)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    add_settings_arguments(p, ("bootstrap", "in_topic", "out_topic", "dlq_topic", "partitions", "fetch_wait_ms", "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_cafile"))
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("inspect", help="show one student's state: recent answers and mastery per skill")
    p.add_argument("student", help="student id, as in the events")
    add_settings_arguments(p, ("redis_url", "key_prefix"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="write a skills x interactions heatmap of mastery")
    p.add_argument("--checkpoint", help="model for --plot and names (default: the one serve recorded in Redis)")
    p.add_argument("--top", type=positive_int, default=10, help="show the strongest and weakest N skills (default 10)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", help="the whole pipeline on one machine: broker, Redis, model, serve, replay")
    p.add_argument("--checkpoint", help="serve this checkpoint (default: train a small DKT first)")
    p.add_argument("--data", help="train on (and replay held-out students of) this file instead of synthetic students")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto")
    p.add_argument("--item", choices=ITEM_COLUMNS, default="skill_id")
    p.add_argument("--bootstrap", help="Kafka HOST:PORT (default: start an embedded broker)")
    p.add_argument("--redis", help="Redis URL (default: 127.0.0.1:6379 if it answers, else start redis-server)")
    p.add_argument("--students", type=positive_int, default=200, help="students to replay (default 200)")
    p.add_argument("--rate", type=positive_float, help="events per second (default: as fast as possible)")
    p.add_argument("--train-students", type=positive_int, default=500, help="synthetic training students (default 500)")
    p.add_argument("--epochs", type=positive_int, default=10, help="most training epochs (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="directory for the checkpoint and logs (default: a new temporary directory, kept)")
    p.add_argument("--follow-timeout-s", type=positive_float, default=120.0)
    p.add_argument("--delete-state", action="store_true", help="delete the demo's Redis keys before exiting")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_demo)


# ---------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.bootstrap == "embedded":
        raise ConfigError("replay needs the bootstrap HOST:PORT of the broker serve reads from, not 'embedded'")
    students = load_replay_students(args.data, args.format, args.item)
    order = event_order(students, args.seed)[: args.limit]
    result, tally = asyncio.run(
        replay_and_follow(settings, students, order, item=args.item, rate_per_s=args.rate, burst_ms=args.burst_ms, follow=args.follow, timeout_s=args.follow_timeout_s)
    )
    print(f"sent {result.sent} events ({result.students} students) in {result.seconds:.1f} s ({result.events_per_s:,.0f} events/s)")
    report: dict = {"sent": result.sent, "students": result.students, "send_seconds": round(result.seconds, 3), "send_events_per_s": round(result.events_per_s, 1)}
    complete = True
    if tally is not None:
        summary = tally.summary(result.first_send_ms)
        report.update(summary)
        print(follow_line(summary))
        complete = summary["missing"] == 0
        if not complete:
            print(f"stream-kt replay: {summary['missing']} events unanswered {args.follow_timeout_s:.0f} s after the last send (is serve running on {settings.in_topic}?)", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    return 0 if complete else 1


def follow_line(summary: dict) -> str:
    latency = "no outputs" if summary["p50_ms"] is None else f"latency p50 {summary['p50_ms']:.0f} ms, p95 {summary['p95_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms"
    rate = f"{summary['events_per_s']:,.0f} events/s end to end" if summary["events_per_s"] else "no end-to-end rate"
    return (
        f"answered {summary['sent'] - summary['missing']} of {summary['sent']} events: {summary['outputs']} mastery outputs, "
        f"{summary['dead_lettered']} dead-lettered, {summary['duplicates']} duplicates dropped, {summary['missing']} missing; {rate}; {latency}"
    )


async def replay_and_follow(
    settings: StreamSettings,
    students: Sequence[StudentSequence],
    order: Sequence[tuple[int, int]],
    *,
    item: str,
    rate_per_s: float | None,
    follow: bool,
    burst_ms: float = BURST_MS,
    timeout_s: float,
    progress: bool = True,
) -> tuple[ReplayResult, FollowTally | None]:
    """Send ``order``; with ``follow``, consume the answers at the same time (a late consumer would inflate latency)."""
    security = kafka_io.client_options(settings)
    await kafka_io.check_reachable(settings.bootstrap, security)
    await kafka_io.ensure_topics(settings.bootstrap, [settings.in_topic], settings.partitions, security=security)
    if not follow:
        return await send_events(settings.bootstrap, settings.in_topic, students, order, item=item, rate_per_s=rate_per_s, burst_ms=burst_ms, progress=progress, security=security), None
    tally = FollowTally(since_ms=now_ms())
    answered_bar = tqdm(total=len(order), desc="answered", unit="event", unit_scale=True, position=1, disable=not progress, mininterval=0.5)
    sent_count = [0]

    def show(current: FollowTally) -> None:
        answered_bar.update(current.answered - answered_bar.n)
        answered_bar.set_postfix(lag=sent_count[0] - current.answered, refresh=False)

    def on_sent(count: int) -> None:
        sent_count[0] = count

    follower = asyncio.create_task(
        follow_outputs(settings.bootstrap, settings.out_topic, tally, dlq_topic=settings.dlq_topic, timeout_s=timeout_s, on_update=show, fetch_wait_ms=settings.fetch_wait_ms, security=security)
    )
    try:
        result = await send_events(settings.bootstrap, settings.in_topic, students, order, item=item, rate_per_s=rate_per_s, burst_ms=burst_ms, progress=progress, on_sent=on_sent, security=security)
        tally.expected = result.sent
        await follower
    finally:
        if not follower.done():
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        answered_bar.close()
    return result, tally


# ---------------------------------------------------------------- inspect


def cmd_inspect(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    state, vocab, checkpoint_path = asyncio.run(load_student(settings, args.student))
    checkpoint = None
    if args.checkpoint or (args.plot and checkpoint_path):
        from stream_kt.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.checkpoint or checkpoint_path)
        vocab = vocab or checkpoint.vocab
    report = state_report(state, vocab)
    if args.plot:
        if checkpoint is None:
            raise ConfigError(f"--plot needs the model: no checkpoint recorded for {state.model_version} in Redis, pass --checkpoint DIR")
        history, positions = mastery_over_window(checkpoint.model, checkpoint.vocab, state.window)
        report["plot"] = str(plot_mastery_heatmap(args.plot, state, checkpoint.vocab, history, positions, checkpoint.version))
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report, top=args.top))
        if args.plot:
            print(f"wrote mastery heatmap to {report['plot']}")
    return 0


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    work_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="stream-kt-demo-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    with contextlib.ExitStack() as stack:
        stack.enter_context(_sigterm_as_interrupt())
        # 1. broker
        if args.bootstrap:
            bootstrap = args.bootstrap
            say(f"[1/6] Kafka: {bootstrap}")
        else:
            from stream_kt.tools.brokers import EmbeddedBroker

            bootstrap = stack.enter_context(EmbeddedBroker(log_path=work_dir / "broker.log")).bootstrap
            say(f"[1/6] Kafka: embedded broker at {bootstrap} (in memory)")
        # 2. Redis
        redis_url, own_redis = _redis_for_demo(args.redis, work_dir, stack)
        say(f"[2/6] Redis: {redis_url}" + (" (started for this demo; stops on exit)" if own_redis else ""))
        # 3. model and the students to replay
        checkpoint_dir, students = _model_and_students(args, work_dir, say)
        settings = StreamSettings(
            bootstrap=bootstrap,
            redis_url=redis_url,
            in_topic=f"demo-{run_id}.answers",
            out_topic=f"demo-{run_id}.mastery",
            dlq_topic=f"demo-{run_id}.answers.dlq",
            group_id=f"demo-{run_id}",
            key_prefix=f"demo-{run_id}",
        ).validate()
        if args.delete_state:  # registered before serve: runs after serve has stopped writing
            stack.callback(delete_keys_with_prefix, redis_url, settings.key_prefix)
        # 4. serve
        serve = stack.enter_context(ServeProcess(checkpoint_dir, settings, work_dir / "serve.log"))
        say(f"[4/6] serve: {serve.ready_line}  (log {serve.log_path})")
        # 5. replay and follow
        order = event_order(students, args.seed)
        say(f"[5/6] replay: {len(order)} answers of {len(students)} students into {settings.in_topic}")
        result, tally = asyncio.run(replay_and_follow(settings, students, order, item=args.item, rate_per_s=args.rate, follow=True, timeout_s=args.follow_timeout_s))
        assert tally is not None
        summary = tally.summary(result.first_send_ms)
        say(f"sent {result.sent} events in {result.seconds:.1f} s ({result.events_per_s:,.0f} events/s)")
        say(follow_line(summary))
        # 6. show some students
        say("[6/6] mastery of the busiest students:")
        busiest = sorted(students, key=lambda s: -len(s))[:3]
        say(_student_reports(redis_url, settings.key_prefix, [s.student_id for s in busiest]))
        complete = summary["missing"] == 0
        say(f"all {result.sent} events answered." if complete else f"{summary['missing']} of {result.sent} events unanswered after {args.follow_timeout_s:.0f} s")
        if args.delete_state:
            say(f"the demo's Redis keys ({settings.key_prefix}:*) are deleted on exit")
        elif own_redis:
            say("this demo's Redis stops on exit; run Redis at 127.0.0.1:6379 (or pass --redis) to inspect students afterwards")
        else:
            redis_flag = "" if redis_url == DEFAULT_LOCAL_REDIS else f" --redis {redis_url}"
            say(f"try:  stream-kt inspect {busiest[0].student_id}{redis_flag} --key-prefix {settings.key_prefix} --plot mastery.png")
        say(f"checkpoint and logs: {work_dir}")
        if args.json:
            print(json.dumps({**summary, "students": result.students, "send_events_per_s": round(result.events_per_s, 1), "key_prefix": settings.key_prefix, "redis": redis_url, "checkpoint": str(checkpoint_dir), "all_answered": complete}))
    return 0 if complete else 1


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the broker, Redis and serve are stopped either way."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _redis_for_demo(url: str | None, work_dir: Path, stack: contextlib.ExitStack) -> tuple[str, bool]:
    """(url, started here): the given URL, else the local default if it answers, else our own redis-server."""
    import redis

    if url:
        delete_keys_with_prefix(url, f"demo-probe-{uuid.uuid4().hex[:8]}")  # one-line error when it does not answer
        return url, False
    try:
        redis.Redis.from_url(DEFAULT_LOCAL_REDIS, socket_connect_timeout=0.5).ping()
        return DEFAULT_LOCAL_REDIS, False
    except redis.RedisError:
        pass
    from stream_kt.tools.brokers import free_port

    port = free_port()
    log = open(work_dir / "redis.log", "ab")
    stack.callback(log.close)
    try:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work_dir)],
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
        )
    except FileNotFoundError:
        raise StreamError("no Redis at 127.0.0.1:6379 and no redis-server to start: install Redis or pass --redis URL") from None
    stack.callback(_stop_process, process)
    own_url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(own_url, socket_connect_timeout=0.2).ping()
            return own_url, True
        except redis.RedisError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise StreamError(f"redis-server on port {port} did not start (log {work_dir / 'redis.log'})") from None
            time.sleep(0.05)


def _model_and_students(args: argparse.Namespace, work_dir: Path, say) -> tuple[Path, list[StudentSequence]]:
    """The checkpoint to serve and the students to replay (never students it was trained on, where we know)."""
    from stream_kt.data.synthetic import SyntheticConfig, generate
    from stream_kt.checkpoint import load_checkpoint

    if args.checkpoint:
        checkpoint = load_checkpoint(args.checkpoint)
        args.item = checkpoint.vocab.item_column  # events must carry the ids the model was trained on
        say(f"[3/6] model: {checkpoint.version} from {args.checkpoint}")
        if args.data:
            students = load_students(args.data, args.format, checkpoint.vocab.item_column)
            held_out_ids = set(checkpoint.split.test)
            held_out = [s for s in students if s.student_id in held_out_ids]
            return Path(args.checkpoint).resolve(), (held_out or students)[: args.students]
        say("      replaying fresh synthetic students (answers on items the model does not know go to the dead-letter topic)")
        return Path(args.checkpoint).resolve(), generate(SyntheticConfig(students=args.students, seed=args.seed + 1))
    if args.data:
        students = load_students(args.data, args.format, args.item)
        from stream_kt.data.split import split_students

        split = split_students([s.student_id for s in students], args.seed, 0.1, 0.2)
        by_id = {s.student_id: s for s in students}
        train_students = [by_id[i] for i in split.train + split.valid]
        replay_students = [by_id[i] for i in split.test][: args.students]
        source = str(args.data)
    else:
        generated = generate(SyntheticConfig(students=args.train_students + args.students, seed=args.seed))
        train_students, replay_students = generated[: args.train_students], generated[args.train_students :]
        split = None
        source = f"{args.train_students} synthetic students"
    if not replay_students:
        raise DataError(f"{args.data}: no held-out students to replay")
    say(f"[3/6] model: training a small DKT on {source} (at most {args.epochs} epochs)")
    checkpoint_dir = _train_small_dkt(train_students, replay_students, split, args, work_dir / "checkpoint")
    return checkpoint_dir.resolve(), replay_students


def _train_small_dkt(train_students, replay_students, split, args: argparse.Namespace, out_dir: Path) -> Path:
    from stream_kt.data.readers import item_names
    from stream_kt.data.split import Split, split_students
    from stream_kt.data.vocab import Vocabulary
    from stream_kt.training.train import TrainConfig, train

    inner = split_students([s.student_id for s in train_students], args.seed, 0.1, 0.0)
    if split is None:
        split = Split(inner.train, inner.valid, tuple(s.student_id for s in replay_students), args.seed, "demo replay")
    else:
        split = Split(inner.train, inner.valid, split.test, args.seed, split.test_source)
    by_id = {s.student_id: s for s in train_students}
    vocab = Vocabulary.build(train_students, args.item, item_names(train_students))
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=32,
        learning_rate=1e-2,  # a small model for a quick demo: a larger step converges in a few epochs
        patience=3,
        seed=args.seed,
        threads=1,  # a small LSTM: two threads on a busy 2-core box train many times slower than one
        model_options={"hidden_size": 64, "embed_dim": 64},
    )
    train([vocab.encode(by_id[i]) for i in split.train], [vocab.encode(by_id[i]) for i in split.valid], vocab, split, config, out_dir)
    return out_dir


class ServeProcess:
    """``stream-kt serve`` as a child process: started, awaited until it prints "serving ", stopped with SIGTERM."""

    def __init__(self, checkpoint_dir: Path, settings: StreamSettings, log_path: Path, ready_timeout_s: float = 120.0) -> None:
        self.command = [
            sys.executable, "-m", "stream_kt.cli", "serve",
            "--checkpoint", str(checkpoint_dir),
            "--bootstrap", settings.bootstrap,
            "--redis", settings.redis_url,
            "--in-topic", settings.in_topic,
            "--out-topic", settings.out_topic,
            "--dlq-topic", settings.dlq_topic,
            "--group", settings.group_id,
            "--key-prefix", settings.key_prefix,
            "--partitions", str(settings.partitions),
        ]  # fmt: skip
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.ready_line = ""
        self.process: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._last_lines: list[str] = []

    def __enter__(self) -> "ServeProcess":
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # one torch thread unless the user says otherwise: a small model's step gains nothing
            # from two, and on a shared box spinning threads slow it down many times over
            env={"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # Ctrl-C reaches only us; we stop serve with SIGTERM in order
        )
        threading.Thread(target=self._copy_output, daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                status = "did not print 'serving' within %.0f s" % self.ready_timeout_s if self.process.poll() is None else f"exited with status {self.process.returncode}"
                last = self._last_lines[-1].strip() if self._last_lines else "no output"
                self.__exit__()
                raise StreamError(f"serve {status}: {last} (log {self.log_path})")
        return self

    def _copy_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.log_path, "a") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                self._last_lines = (self._last_lines + [line])[-20:]
                if line.startswith("serving ") and not self._ready.is_set():
                    self.ready_line = line.strip()
                    self._ready.set()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            status = stop_process(self.process, timeout_s=30)
            if status not in (0, None):
                print(f"stream-kt demo: serve exited with status {status} (log {self.log_path})", file=sys.stderr)
            self.process = None


def stop_process(process: subprocess.Popen | None, timeout_s: float = 10.0, signum: int = signal.SIGTERM) -> int | None:
    """Signal ``process`` (ours) and wait; SIGKILL it if it outlives ``timeout_s``."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _student_reports(redis_url: str, prefix: str, student_ids: list[str]) -> str:
    settings = StreamSettings(redis_url=redis_url, key_prefix=prefix)
    reports = []
    for student_id in student_ids:
        try:
            state, vocab, _ = asyncio.run(load_student(settings, student_id))
        except StudentNotFound:
            reports.append(f"student {student_id}: no state (none of its events was applied)")
            continue
        reports.append(format_report(state_report(state, vocab), top=3, window_shown=12))
    return "\n".join(reports)
