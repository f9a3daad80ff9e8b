"""Factories for the stream tests: settings, events, topic I/O, a running processor, the reference run.

Everything runs against the real broker and the real Redis; waits poll with a
deadline, never a fixed sleep.  ``serve``, our own redis-server, the wait and the topic
reader are the launch layer's (``stream_kt.tools.processes``, ``stream_kt.tools.traffic``),
as the demo, the fault suite and the benchmarks use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_kt.checkpoint import Checkpoint
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.service import keys
from stream_kt.service.events import decode_mastery, encode_answer
from stream_kt.service.kafka_io import committed_offsets as kafka_committed_offsets
from stream_kt.service.kafka_io import ensure_topics, make_tool_producer
from stream_kt.service.metrics import Metrics
from stream_kt.service.processor import ProcessorStats, run_processor
from stream_kt.service.redis_store import redis_client_sync
from stream_kt.service.state import WINDOW, StudentState, decode_state, read_header
from stream_kt.settings import StreamSettings
from stream_kt.tools.processes import RedisServer, ServeProcess
from stream_kt.tools.processes import until as launch_until
from stream_kt.tools.traffic import TopicReader, send_in_order

PARTITIONS = 3
REPO = Path(__file__).parents[2]  # serve runs here, so this checkout's package is the one it imports


@dataclass(frozen=True)
class Answer:
    student_id: str
    item_id: str
    correct: int
    ts_ms: int
    elapsed_ms: int | None = None

    def encode(self) -> bytes:
        return encode_answer(self.student_id, self.item_id, self.correct, self.ts_ms, elapsed_ms=self.elapsed_ms)


def synthetic_answers(
    checkpoint: Checkpoint, students: int, seed: int = 0, min_length: int = 60, max_length: int = 150
) -> list[Answer]:
    """Synthetic students over the checkpoint's items "0".."V-1", interleaved the way a live stream is."""
    sequences = generate(
        SyntheticConfig(
            students=students,
            items=len(checkpoint.vocab),
            concepts=3,
            min_length=min_length,
            max_length=max_length,
            seed=seed,
        )
    )
    run = uuid.uuid4().hex[:6]  # student ids unique per test: nothing is shared through Redis
    answers = [
        Answer(f"{run}-{s.student_id}", item, c, ts)
        for s in sequences
        for item, c, ts in zip(s.items, s.correct, s.ts_ms)
    ]
    return sorted(answers, key=lambda a: a.ts_ms)  # per student ts increase, so each student's order is kept


def by_student(answers: Iterable[Answer]) -> dict[str, list[Answer]]:
    out: dict[str, list[Answer]] = {}
    for a in answers:
        out.setdefault(a.student_id, []).append(a)
    return out


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterable[None]:
    """As ``stream-kt serve`` runs: one thread for the small step (more contend with the event loop)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_settings(bootstrap: str, redis_url: str, key_prefix: str, topics: Callable[[str], str]) -> StreamSettings:
    """A test's settings on ``bootstrap``: its own topics, group and key prefix; small batches that fill fast."""
    return StreamSettings(
        bootstrap=bootstrap,
        redis_url=redis_url,
        in_topic=topics("in"),
        out_topic=topics("out"),
        dlq_topic=topics("dlq"),
        group_id=topics("group"),
        key_prefix=key_prefix,
        batch_size=16,
        max_wait_ms=5,
        partitions=PARTITIONS,
    )


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test for pytest to collect


@pytest.fixture
def make_settings(broker, redis_url: str, key_prefix: str, topics) -> Callable[..., StreamSettings]:
    """Settings on the test broker and Redis, with this test's topics, group and key prefix."""
    base = test_settings(broker.bootstrap, redis_url, key_prefix, topics)

    def make(**overrides: object) -> StreamSettings:
        return base.replace(**overrides)

    return make


async def produce(settings: StreamSettings, messages: Iterable[tuple[bytes | None, bytes]]) -> dict[int, int]:
    """Send (key, value) pairs to the input topic (created first with the test's partitions), in order.

    Returns the end offset (last offset + 1) of each partition written to, from the
    delivery reports: the embedded broker's ListOffsets answers the last batch's base
    offset + 1 instead, so ``end_offsets`` cannot be trusted there.
    """
    await ensure_topics(
        settings.bootstrap, [settings.in_topic, settings.out_topic, settings.dlq_topic], settings.partitions
    )
    producer = make_tool_producer(settings.bootstrap, acks="all")
    await producer.start()
    try:
        end: dict[int, int] = {}
        for report in await send_in_order(producer, settings.in_topic, list(messages)):
            end[report.partition] = max(end.get(report.partition, 0), report.offset + 1)
        return end
    finally:
        await producer.stop()


def answer_messages(answers: Iterable[Answer]) -> list[tuple[bytes, bytes]]:
    return [(a.student_id.encode(), a.encode()) for a in answers]


def dedupe_outputs(records: Iterable) -> dict[tuple[str, int], dict]:
    """Mastery messages by (student_id, seq); a repeat must carry the same values."""
    out: dict[tuple[str, int], dict] = {}
    for record in records:
        message = decode_mastery(record.value)
        key = (message["student_id"], message["seq"])
        if key in out:
            assert out[key]["p_correct"] == message["p_correct"] and out[key]["mastery"] == message["mastery"], (
                f"repeat of {key} differs"
            )
        out[key] = message
    return out


@contextlib.asynccontextmanager
async def running_processor(
    settings: StreamSettings,
    checkpoint: Checkpoint,
    timeout_s: float = 60.0,
    metrics: Metrics | None = None,
    shadow: Checkpoint | None = None,
) -> AsyncIterator[list[ProcessorStats]]:
    """Run ``run_processor`` in this loop until the block ends; the yielded list gets its stats."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_processor(settings, checkpoint, stop=stop, ready=ready, metrics=metrics, shadow=shadow)
    )
    stats: list[ProcessorStats] = []
    ready_or_done = await asyncio.wait(
        {task, asyncio.ensure_future(ready.wait())}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
    )
    if task in ready_or_done[0]:
        task.result()  # it failed: raise its error
    assert ready.is_set(), f"processor got no partitions within {timeout_s} s"
    try:
        yield stats
    finally:
        stop.set()
        stats.append(await asyncio.wait_for(task, timeout_s))


def read_states(
    redis_url: str,
    prefix: str,
    student_ids: Iterable[str],
    checkpoint: Checkpoint | None = None,
    sources: Iterable[str] = (),
) -> dict[str, StudentState | None]:
    """Stored states (schema 1 or 2) as ``StudentState``s: window items named by the writer's vocabulary (from
    Redis, where serve records it), model state split by ``checkpoint``'s state shapes, ``sources`` named."""
    client = redis_client_sync(redis_url)
    shapes = (
        None if checkpoint is None else {k: tuple(v.shape[1:]) for k, v in checkpoint.model.initial_state(1).items()}
    )
    try:
        states: dict[str, StudentState | None] = {}
        for s in student_ids:
            raw = client.get(keys.student_key(s, prefix))
            if raw is None:
                states[s] = None
                continue
            header = read_header(raw)
            vocab = (
                client.get(keys.model_vocab_key(header["model_version"].rstrip(b"\0").decode(), prefix))
                if header is not None
                else None
            )
            ids = json.loads(vocab)["ids"] if vocab else (list(checkpoint.vocab.ids) if checkpoint else None)
            states[s] = decode_state(raw, s, ids, shapes, sources)
        return states
    finally:
        client.close()


@dataclass
class Expected:
    """One student's reference run: the model stepped over the whole sequence, one event at a time."""

    p_correct: list[float] = field(default_factory=list)  # per event, before its answer
    mastery: list[np.ndarray] = field(default_factory=list)  # per event, after it
    state: dict[str, np.ndarray] = field(default_factory=dict)  # final (L, H) rows


def served_outputs(
    settings: StreamSettings, checkpoint: Checkpoint, answers: list[Answer]
) -> dict[tuple[str, int], dict]:
    """Produce ``answers``, serve them with ``checkpoint`` until every one has an output; outputs by (student, seq)."""

    async def scenario():
        await produce(settings, answer_messages(answers))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, checkpoint):
                await out.read_until(lambda rs: len(rs) >= len(answers))
            return dedupe_outputs(out.records)

    return asyncio.run(scenario())


@torch.no_grad()
def reference_run(checkpoint: Checkpoint, answers: list[Answer]) -> Expected:
    model, vocab = checkpoint.model.eval(), checkpoint.vocab
    state = model.initial_state(1)
    expected = Expected()
    for a in answers:
        out = model.step(state, torch.tensor([vocab.index(a.item_id)]), torch.tensor([a.correct]))
        state = out.state
        expected.p_correct.append(float(out.p_correct[0]))
        expected.mastery.append(out.mastery[0].numpy())
    expected.state = {k: v[0].numpy() for k, v in state.items()}
    return expected


def assert_final_states(
    redis_url: str, prefix: str, checkpoint: Checkpoint, answers: list[Answer], tol: float = 1e-5
) -> None:
    """Every student's stored state equals the reference run over all their answers."""
    students = by_student(answers)
    states = read_states(redis_url, prefix, students, checkpoint)
    for student, seq in students.items():
        state = states[student]
        assert state is not None, f"no state for {student}"
        expected = reference_run(checkpoint, seq)
        assert state.model_version == checkpoint.version
        assert state.events_applied == len(seq)
        assert state.window == [(a.item_id, a.correct, a.ts_ms) for a in seq[-WINDOW:]]
        for name, rows in expected.state.items():
            np.testing.assert_allclose(state.model_state[name], rows, atol=tol, err_msg=f"{student} {name}")
        np.testing.assert_allclose(state.mastery, expected.mastery[-1], atol=tol, err_msg=f"{student} mastery")


def expected_output_keys(answers: Iterable[Answer]) -> set[tuple[str, int]]:
    return {(s, seq) for s, events in by_student(answers).items() for seq in range(1, len(events) + 1)}


async def committed_offsets(settings: StreamSettings) -> dict[int, int]:
    """The group's committed offset per partition of the input topic (partitions without one left out)."""
    return await kafka_committed_offsets(
        settings.bootstrap, settings.group_id, settings.in_topic, list(range(settings.partitions))
    )


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterable[Callable[..., ServeProcess]]:
    """Factory of ``stream-kt serve`` subprocesses; whatever still runs at the end is killed."""
    started: list[ServeProcess] = []

    def start(settings: StreamSettings, checkpoint: Path, *extra: str) -> ServeProcess:
        # metrics port 0: several on one machine (a test that wants the endpoint passes its own port in extra)
        proc = ServeProcess(
            settings.replace(checkpoint=str(checkpoint), metrics_port=0),
            tmp_path / f"serve-{len(started)}.log",
            *extra,
            cwd=REPO,
        )
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.kill()


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 30.0,
    what: str | Callable[[], str] = "condition",
    poll_s: float = 0.05,
) -> None:
    """Poll ``condition`` (a function or a coroutine function) every ``poll_s`` until it holds; fail after
    ``timeout_s``. ``what`` may be a function: asked at the timeout, it can say what was seen last."""
    await launch_until(condition, timeout_s, what, poll_s, error=AssertionError)


async def until_committed(settings: StreamSettings, total: int, timeout_s: float = 30.0) -> None:
    """Wait until the group's committed offsets add up to ``total``: outputs go out before the commit, so
    reading them is not enough."""
    committed = 0

    async def adds_up() -> bool:
        nonlocal committed
        committed = sum((await committed_offsets(settings)).values())
        return committed >= total

    await until(adds_up, timeout_s, lambda: f"committed offsets adding up to {total} (at {committed})")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterable[RedisServer]:
    """A redis-server of this test's own on a free port, persisted to an append-only file so
    a restart keeps the data."""
    if not RedisServer.available():
        pytest.skip("no redis-server binary")
    with RedisServer(tmp_path / "redis") as server:
        yield server
