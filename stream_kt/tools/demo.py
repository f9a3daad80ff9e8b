"""The demo: the whole pipeline on one machine, in six steps, each announced through ``say``.

1. a broker (the embedded one unless ``bootstrap`` is given);
2. Redis: the given URL, else ``default_redis`` (REDIS_URL, the settings file's, else
   127.0.0.1:6379) if it answers, else a redis-server of its own;
3. a model (the given checkpoint, else a small DKT trained on simulated or given students);
4. ``stream-kt serve`` as a child process, its endpoint on ``metrics_port`` (0: a free one);
5. held-out students replayed while their answers are followed;
6. the busiest students' mastery.

Everything the demo started (broker, Redis, serve) is stopped on exit, Ctrl-C or SIGTERM.
Its Redis keys, under a prefix of its own (``demo-<run id>``), stay in a Redis it did not
start, so ``stream-kt inspect`` can show its students afterwards; the command says how
many and how to remove them, or ``delete_state`` removes them on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream_kt.data.sequences import StudentSequence
from stream_kt.data.split import Split
from stream_kt.errors import DataError
from stream_kt.service.exceptions import StreamError
from stream_kt.service.redis_store import StudentStore
from stream_kt.settings import StreamSettings
from stream_kt.tools.brokers import EmbeddedBroker, free_port
from stream_kt.tools.follow import FollowTally
from stream_kt.tools.inspect_state import (
    StudentNotFound,
    delete_keys_with_prefix,
    format_report,
    load_student,
    online_quality,
    state_report,
)
from stream_kt.tools.processes import RedisServer, ServeProcess, sigterm_as_interrupt
from stream_kt.tools.replay import ReplayResult, event_order, replay_and_follow
from stream_kt.training.prepare import load_students

DEFAULT_LOCAL_REDIS = "redis://127.0.0.1:6379/0"
Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    checkpoint: str | None = None  # serve this checkpoint (default: train a small DKT first)
    data: str | None = None  # train on (and replay held-out students of) this file instead of synthetic students
    fmt: str = "auto"
    item: str = "skill_id"
    bootstrap: str | None = None  # Kafka HOST:PORT (default: start an embedded broker)
    redis: str | None = None  # Redis URL that must answer (None: default_redis if it answers, else start redis-server)
    default_redis: str = DEFAULT_LOCAL_REDIS
    students: int = 200  # students to replay
    rate: float | None = None  # events per second (None: as fast as possible)
    train_students: int = 500  # synthetic training students
    epochs: int = 10  # most training epochs
    seed: int = 0
    out: str | None = None  # directory for the checkpoint and logs (default: a new temporary directory, kept)
    follow_timeout_s: float = 120.0
    delete_state: bool = False  # delete the demo's Redis keys before exiting
    metrics_port: int = 9108  # serve's /metrics, /healthz, /readyz (0: any free port)
    kafka_connect_timeout_s: int = 20  # serve and replay give up start-up after this long without an answer from Kafka


@dataclass
class DemoResult:
    replay: ReplayResult
    summary: dict  # FollowTally.summary
    settings: StreamSettings
    checkpoint: Path
    own_redis: bool
    busiest: list[str]  # student ids, busiest first
    work_dir: Path
    quality: dict  # the served model's online quality (``service.quality.Scores.summary``); empty if none yet

    @property
    def complete(self) -> bool:
        return self.summary["missing"] == 0


def run_demo(options: DemoOptions, say: Say, follow_line: Callable[[dict, float], str]) -> DemoResult:
    work_dir = Path(options.out) if options.out else Path(tempfile.mkdtemp(prefix="stream-kt-demo-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_interrupt())
        # 1. broker
        if options.bootstrap:
            bootstrap = options.bootstrap
            say(f"[1/6] Kafka: {bootstrap}")
        else:
            bootstrap = stack.enter_context(EmbeddedBroker(log_path=work_dir / "broker.log")).bootstrap
            say(f"[1/6] Kafka: embedded broker at {bootstrap} (in memory)")
        # 2. Redis
        redis_url, own_redis = redis_for_demo(options.redis, options.default_redis, work_dir, stack)
        say(f"[2/6] Redis: {redis_url}" + (" (started for this demo; stops on exit)" if own_redis else ""))
        # 3. model and the students to replay
        checkpoint_dir, students, item = model_and_students(options, work_dir, say)
        settings = StreamSettings(
            bootstrap=bootstrap,
            redis_url=redis_url,
            in_topic=f"demo-{run_id}.answers",
            out_topic=f"demo-{run_id}.mastery",
            dlq_topic=f"demo-{run_id}.answers.dlq",
            group_id=f"demo-{run_id}",
            key_prefix=f"demo-{run_id}",
            metrics_port=options.metrics_port or free_port(),
            kafka_connect_timeout_s=options.kafka_connect_timeout_s,
        )
        if options.delete_state:  # registered before serve: runs after serve has stopped writing
            stack.callback(delete_keys_with_prefix, redis_url, settings.key_prefix)
        # 4. serve
        serve = stack.enter_context(
            ServeProcess(settings.replace(checkpoint=str(checkpoint_dir)), work_dir / "serve.log")
        )
        say(
            f"[4/6] serve: {serve.ready_line}  (metrics "
            f"http://127.0.0.1:{settings.metrics_port}/metrics, log {serve.log_path})"
        )
        # 5. replay and follow
        order = event_order(students, options.seed)
        say(f"[5/6] replay: {len(order)} answers of {len(students)} students into {settings.in_topic}")
        result, tally = asyncio.run(
            replay_and_follow(
                settings,
                students,
                order,
                item=item,
                rate_per_s=options.rate,
                follow=True,
                timeout_s=options.follow_timeout_s,
            )
        )
        assert isinstance(tally, FollowTally)
        summary = tally.summary(result.first_send_ms)
        say(f"sent {result.sent} events in {result.seconds:.1f} s ({result.events_per_s:,.0f} events/s)")
        say(follow_line(summary, result.events_per_s))
        # 6. show some students
        say("[6/6] mastery of the busiest students:")
        busiest = [s.student_id for s in sorted(students, key=lambda s: -len(s))[:3]]
        say(student_reports(settings, busiest))
        quality = served_quality(settings)
        if quality:
            say(
                f"online quality of what was served ({quality['count']:,} answers, each student's first not scored): "
                f"AUC {quality['auc']:.4f}, log-loss {quality['logloss']:.4f}, accuracy {quality['accuracy']:.4f}"
            )
        return DemoResult(result, summary, settings, checkpoint_dir, own_redis, busiest, work_dir, quality)


def served_quality(settings: StreamSettings) -> dict:
    """The online quality serve added up in Redis (one model version in a demo), or {}."""
    found = asyncio.run(online_quality(settings))
    return next(iter(found.values())).summary() if found else {}


def redis_reachable(url: str) -> None:
    """``StreamError`` in one line unless Redis at ``url`` answers a PING."""

    async def ping() -> None:
        store = await StudentStore.connect(url, "demo", attempts=1, socket_timeout_s=0.5)
        await store.close()

    asyncio.run(ping())


def redis_for_demo(url: str | None, default: str, work_dir: Path, stack: contextlib.ExitStack) -> tuple[str, bool]:
    """(url, started here): the given URL, else ``default`` if it answers, else our own redis-server."""
    if url:
        redis_reachable(url)  # one-line error when it does not answer
        return url, False
    try:
        redis_reachable(default)
        return default, False
    except StreamError:
        pass
    if not RedisServer.available():
        raise StreamError(f"no Redis at {default} and no redis-server to start: install Redis or pass --redis URL")
    server = RedisServer(work_dir, persistent=False)  # the demo's students need not outlive it
    stack.callback(server.stop)
    server.start(timeout_s=10)
    return server.url, True


def model_and_students(options: DemoOptions, work_dir: Path, say: Say) -> tuple[Path, list[StudentSequence], str]:
    """The checkpoint to serve, the students to replay (never students it was trained on, where we
    know) and the ids they carry."""
    from stream_kt.checkpoint import load_checkpoint
    from stream_kt.data.split import split_students
    from stream_kt.data.synthetic import SyntheticConfig, generate

    if options.checkpoint:
        checkpoint = load_checkpoint(options.checkpoint)
        item = checkpoint.vocab.item_column  # events must carry the ids the model was trained on
        say(f"[3/6] model: {checkpoint.version} from {options.checkpoint}")
        if options.data:
            students = load_students(options.data, options.fmt, item)
            held_out_ids = set(checkpoint.split.test)
            held_out = [s for s in students if s.student_id in held_out_ids]
            return Path(options.checkpoint).resolve(), (held_out or students)[: options.students], item
        say(
            "      replaying fresh synthetic students (answers on items the model does not know go "
            "to the dead-letter topic)"
        )
        return (
            Path(options.checkpoint).resolve(),
            generate(SyntheticConfig(students=options.students, seed=options.seed + 1)),
            item,
        )
    split = None
    if options.data:
        students = load_students(options.data, options.fmt, options.item)
        split = split_students([s.student_id for s in students], options.seed, 0.1, 0.2)
        by_id = {s.student_id: s for s in students}
        train_students = [by_id[i] for i in split.train + split.valid]
        replay_students = [by_id[i] for i in split.test][: options.students]
        source = str(options.data)
    else:
        # questions testing 1 to 3 of 8 skills: the events carry each question's skill_ids (and its question_id)
        generated = generate(
            SyntheticConfig(
                students=options.train_students + options.students,
                seed=options.seed,
                concepts=8,
                items=60,
                max_skills=3,
                question_spread=0.5,
            )
        )
        train_students, replay_students = generated[: options.train_students], generated[options.train_students :]
        source = f"{options.train_students} synthetic students"
    if not replay_students:
        raise DataError(f"{options.data}: no held-out students to replay")
    say(f"[3/6] model: training a small DKT on {source} (at most {options.epochs} epochs)")
    checkpoint_dir = train_small_dkt(train_students, replay_students, split, options, work_dir / "checkpoint")
    return checkpoint_dir.resolve(), replay_students, options.item


def train_small_dkt(
    train_students: list[StudentSequence],
    replay_students: list[StudentSequence],
    split: Split | None,
    options: DemoOptions,
    out_dir: Path,
) -> Path:
    from stream_kt.data.readers import item_names
    from stream_kt.data.split import split_students
    from stream_kt.data.vocab import Vocabulary
    from stream_kt.training.train import TrainConfig, train

    inner = split_students([s.student_id for s in train_students], options.seed, 0.1, 0.0)
    if split is None:
        split = Split(
            inner.train, inner.valid, tuple(s.student_id for s in replay_students), options.seed, "demo replay"
        )
    else:
        split = Split(inner.train, inner.valid, split.test, options.seed, split.test_source)
    by_id = {s.student_id: s for s in train_students}
    vocab = Vocabulary.build(train_students, options.item, item_names(train_students))
    config = TrainConfig(
        epochs=options.epochs,
        batch_size=32,
        learning_rate=1e-2,  # a small model for a quick demo: a larger step converges in a few epochs
        patience=3,
        seed=options.seed,
        threads=1,  # a small LSTM: two threads on a busy 2-core box train many times slower than one
        model_options={"hidden_size": 64, "embed_dim": 64},
    )
    train(
        [vocab.encode(by_id[i]) for i in split.train],
        [vocab.encode(by_id[i]) for i in split.valid],
        vocab,
        split,
        config,
        out_dir,
    )
    return out_dir


def student_reports(settings: StreamSettings, student_ids: list[str]) -> str:
    reports = []
    for student_id in student_ids:
        try:
            state, vocab, _ = asyncio.run(load_student(settings, student_id))
        except StudentNotFound:
            reports.append(f"student {student_id}: no state (none of its events was applied)")
            continue
        reports.append(format_report(state_report(state, vocab), top=3, window_shown=12))
    return "\n".join(reports)
