"""The streaming processor: answer events -> student state in Redis -> model step -> mastery topic.

This module owns the commit order.  Per batch:

 1. Poll up to B records (no lock held: see Rebalance).
 2. Decode and validate each record; an invalid one goes to the DLQ with its original
    key and bytes.  Its delivery is awaited before step 8, so no event is committed
    before its dead letter exists; a crash before 8 sends it again (the DLQ is
    at-least-once, its ``source`` header identifies a repeat).
 3. Read the states of the batch's students: one pipeline of GETs.
 4. Skip events the state already applied (offset <= ``state.offsets[topic/partition]``):
    the replay after a crash between 7 and 8.  New students start from the model's
    initial state; a state of another model version is rebuilt by running this model
    over its stored window (ids unknown to this vocabulary dropped), keeping its counts.
 5. Step the rounds (``batcher.rounds``): each student's events in order, many
    students per fixed-shape step.
 6. Produce every mastery message and await delivery, so outputs exist before any
    state says they were applied.  A crash between 6 and 7 repeats them on replay with
    the same (student_id, seq) and the same values; consumers drop the repeats.
 7. Write the changed states: one pipeline of SETs.  Each state carries its offsets,
    so from here on a replay of these events is skipped in 4: losing step 8 is harmless.
 8. Commit offset + 1 per partition.  Only now may the broker forget the batch.

Redis and Kafka errors: a retriable failure in 3-7 (or a failed delivery in 2's dead
letters or 6's outputs) is logged with the batch's topic/partition/offset ranges, backed
off (bounded exponential) and the dead letters and 3-7 are redone from a fresh read.
Step 8 never runs for a batch whose step 7 failed; redoing 6 (or the dead letters)
only repeats messages, as a crash would.  The retrying batch keeps the rebalance gate, so
its partitions are not handed over mid-retry.  Stopping during the outage abandons the
batch uncommitted: the next owner replays it.  While a batch has retried longer than
``unready_after_retry_s``, ``/readyz`` fails (``stream_kt_batch_retry_seconds`` says how
long), and the consumer lag (the broker's high-water mark minus the committed offset)
grows with every new event.

Errors retrying cannot fix (``kafka_io.permanent``): a dead letter is always made to fit
(``kafka_io.dead_letter``: a prefix of the original, with its size and SHA-256, within
the smaller of the producer's and the DLQ topic's limits); should the broker still refuse
it as too large, the limit is lowered and the batch redone.  Any other permanent error,
and any permanent error of a mastery output, stops the processor (``FatalStreamError``)
with the batch uncommitted: skipping the output would lose it, retrying would spin
forever.

Rebalance: steps 2-8 run under the gate's lock, which ``on_partitions_revoked`` also
takes, so a partition is handed over only after its in-flight batch is committed and
the next owner starts at the committed offset.  Poll (1) runs outside the lock: during
a rebalance ``getmany`` waits for the new assignment, which waits for the revoke
callback.  A batch whose poll overlapped a revoke (the revoke ran while it waited
for the lock, or ``getmany`` itself spanned revoke, join and assign and returned
records of the NEW assignment) is dropped unprocessed, and every partition of it we
still own is rewound to the batch's first offset: the consumer's position had already
moved past those records, and without the rewind the next commit would skip them.
Partitions we lost are re-read by their new owner from the committed offset.  State offsets (4) are the second line: should a replay slip through anyway (a
member that lost its membership), it is skipped.  Not covered: a member that lost its
membership but still writes (a zombie) could overwrite a newer state; fencing it would
take Kafka transactions.

Shutdown: ``stop`` is checked between batches; the in-flight batch runs through 8,
then consumer, producer and Redis are closed.

Metrics (``metrics.py``): counted once per batch, after 8, so a retried batch counts
once; the model steps' fill and duration are kept per step and handed over with the
batch; consumer lag is refreshed from the consumer's own positions about once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

from stream_kt.backends import StepBackend, make_backend
from stream_kt.checkpoint import Checkpoint
from stream_kt.data.sequences import lag_seconds
from stream_kt.service import batcher, kafka_io
from stream_kt.service.events import AnswerEvent, decode_answer, encode_mastery
from stream_kt.service.exceptions import FatalStreamError, InvalidEvent
from stream_kt.service.http import Readiness
from stream_kt.service.metrics import Metrics
from stream_kt.service.redis_store import REDIS_ERRORS, StudentStore
from stream_kt.service.state import StudentState, window_steps
from stream_kt.settings import StreamSettings

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord]]
MIN_DLQ_LIMIT_BYTES = 4096  # the smallest dead letter: headers and a prefix of the event


@dataclass
class ProcessorStats:
    events_in: int = 0  # records consumed (valid and invalid)
    outputs: int = 0  # mastery messages of committed batches (a retried batch counts once)
    dlq: int = 0  # dead letters delivered
    skipped_replays: int = 0  # events the stored state had already applied
    batches: int = 0  # batches committed


@dataclass
class Pending:
    """A valid event and where it came from."""

    event: AnswerEvent
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        return kafka_io.source(self.topic, self.partition)


@dataclass
class Applied:
    """Steps 3-5 of one batch: what 6 produces and 7 writes."""

    outputs: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, mastery message)
    event_ts_ms: list[int] = field(default_factory=list)  # each output's event ts, for the end-to-end latency
    states: list[StudentState] = field(default_factory=list)
    skipped: int = 0


class BackoffPolicy:
    """Bounded exponential backoff: first_s, 2 first_s, ... up to max_s."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.first_s, self.max_s = first_s, max_s

    def delay_s(self, attempt: int) -> float:
        return min(self.first_s * 2.0 ** (attempt - 1), self.max_s)


def describe(records: Records) -> str:
    """Topic/partition/offset ranges of a batch, for logs: "kt.answers/0@10-73, kt.answers/3@5-20"."""
    return ", ".join(f"{tp.topic}/{tp.partition}@{rs[0].offset}-{rs[-1].offset}" for tp, rs in records.items() if rs)


class Processor:
    def __init__(
        self,
        settings: StreamSettings,
        checkpoint: Checkpoint,
        backend: StepBackend,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        store: StudentStore,
        gate: RebalanceGate,
        backoff: BackoffPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.version = checkpoint.version
        self.vocab = checkpoint.vocab
        self.backend = backend
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.gate = gate
        self.backoff = backoff or BackoffPolicy()
        self.stats = ProcessorStats()
        self.metrics = metrics or Metrics(process_metrics=False)
        self.step_fills: list[float] = []  # per model step since the last batch's metrics: rows / B
        self.step_seconds: list[float] = []
        self.lag_interval_s = 1.0
        self.dlq_limit_bytes = kafka_io.PRODUCER_MAX_REQUEST_BYTES  # run_processor lowers it to the DLQ topic's limit
        self.retrying_since: float | None = None  # monotonic start of the current batch's retries
        self.committed: dict[TopicPartition, int] = {}  # offsets this processor committed
        self.metrics.batch_retry_seconds = self.retry_seconds
        self.initial_rows = {k: v[0].numpy().copy() for k, v in backend.initial_state(1).items()}  # one student's (L, H) rows

    async def run(self, stop: asyncio.Event) -> None:
        lag = asyncio.create_task(self.lag_loop(stop))
        try:
            while not stop.is_set():
                revocations = self.gate.revocations
                records = await self.poll(stop)  # 1
                if not records:
                    continue
                async with self.gate.lock:
                    if self.gate.revocations != revocations:  # see Rebalance above
                        self.rewind(records)
                        continue
                    await self.process(records, stop)
        finally:
            lag.cancel()
            await asyncio.gather(lag, return_exceptions=True)

    def retry_seconds(self) -> float:
        """How long the current batch has been retrying (0: it is not)."""
        return 0.0 if self.retrying_since is None else time.monotonic() - self.retrying_since

    def problem(self) -> str | None:
        """What ``/readyz`` reports about the processor itself: a batch stuck retrying too long."""
        retry_s = self.retry_seconds()
        if retry_s > self.settings.unready_after_retry_s:
            return f"a batch has been retrying for {retry_s:.0f} s (more than {self.settings.unready_after_retry_s} s)"
        return None

    def rewind(self, records: Records) -> None:
        """Drop a batch that overlapped a rebalance; re-read what we still own from its first offset."""
        owned = self.consumer.assignment()
        for tp, batch in records.items():
            if batch and tp in owned:
                self.consumer.seek(tp, batch[0].offset)
        log.info("batch %s: polled across a rebalance, dropped; partitions still owned rewound to re-read it", describe(records))

    async def poll(self, stop: asyncio.Event) -> Records:
        """1: getmany, abandoned when ``stop`` is set (it waits out a group join, ignoring its timeout)."""
        fetch = asyncio.ensure_future(self.consumer.getmany(timeout_ms=self.settings.max_wait_ms, max_records=self.settings.batch_size))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not fetch.done():
            fetch.cancel()  # records are taken from the fetcher only when it returns: nothing is lost
            return {}
        records: Records = fetch.result()
        return records

    async def process(self, records: Records, stop: asyncio.Event) -> None:
        """Steps 2-8 for one polled batch."""
        valid, invalid = self.validate(records)  # 2
        attempt = 0
        while True:
            stage = "dead letters"
            try:
                dead_letters = await self.send_dead_letters(invalid)  # 2
                stage = "states"
                applied = await self.apply(valid)  # 3, 4, 5
                stage = "mastery outputs"
                await asyncio.gather(*await kafka_io.send_keyed(self.producer, self.settings.out_topic, applied.outputs))  # 6
                delivered_ms = time.time_ns() // 1_000_000
                stage = "states"
                await self.store.write(applied.states)  # 7
                stage = "dead letters"
                await asyncio.gather(*(delivery for _, delivery in dead_letters))  # 2's deliveries, before 8
                break
            except (*REDIS_ERRORS, KafkaError) as exc:
                attempt += 1
                if isinstance(exc, KafkaError):
                    self.metrics.kafka_errors += 1
                    self.on_permanent_error(exc, stage, records)
                else:
                    self.metrics.redis_errors += 1
                if self.retrying_since is None:
                    self.retrying_since = time.monotonic()
                delay_s = self.backoff.delay_s(attempt)
                log.error("batch %s: attempt %d failed (%s: %s); nothing committed, retrying in %.1f s", describe(records), attempt, type(exc).__name__, exc, delay_s)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay_s)
                if stop.is_set():
                    log.warning("batch %s: stopping with the batch uncommitted; the next owner replays it", describe(records))
                    return
        self.retrying_since = None
        await self.commit(records)  # 8
        events_in = sum(len(rs) for rs in records.values())
        self.stats.events_in += events_in
        self.stats.outputs += len(applied.outputs)
        self.stats.dlq += len(dead_letters)
        self.stats.skipped_replays += applied.skipped
        self.stats.batches += 1
        self.metrics.record_batch(events_in, len(applied.outputs), applied.skipped, (reason for reason, _ in dead_letters))
        self.metrics.record_steps(self.step_fills, self.step_seconds)
        self.metrics.record_latencies_ms(delivered_ms, applied.event_ts_ms)
        self.step_fills, self.step_seconds = [], []
        log.debug("batch %s: %d applied, %d skipped, %d dead letters", describe(records), len(applied.outputs), applied.skipped, len(dead_letters))

    def validate(self, records: Records) -> tuple[list[Pending], list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]]:
        """2: valid events in consumption order, and the dead letters to send: (reason, key, original bytes, headers)."""
        valid, dead_letters = [], []
        for tp, batch in records.items():
            for record in batch:
                try:
                    event = decode_answer(record.value, self.vocab.index, self.settings.max_event_bytes)
                except InvalidEvent as exc:
                    # the detail may quote the event's fields: the DLQ header carries it, the log only at DEBUG
                    log.warning("%s/%d/%d: dead letter (%s)", tp.topic, tp.partition, record.offset, exc.reason)
                    log.debug("%s/%d/%d: %s", tp.topic, tp.partition, record.offset, exc.detail)
                    headers = kafka_io.dead_letter_headers(exc.reason, exc.detail, tp.topic, tp.partition, record.offset)
                    dead_letters.append((exc.reason, record.key, record.value, headers))
                    continue
                valid.append(Pending(event, tp.topic, tp.partition, record.offset))
        return valid, dead_letters

    async def send_dead_letters(self, invalid: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> list[tuple[str, asyncio.Future[Any]]]:
        """2: send each dead letter, made to fit ``dlq_limit_bytes`` (a truncated one is logged with its source)."""
        sent = []
        for reason, key, value, headers in invalid:
            key, value, headers = kafka_io.dead_letter(key, value, headers, self.dlq_limit_bytes)
            if headers and headers[-1][0] == "sha256":
                source = dict(headers).get("source", b"?").decode()
                log.warning("%s: dead letter (%s) truncated to %d bytes to fit the dead-letter topic; the original size and SHA-256 are in its headers", source, reason, len(value or b""))
            sent.append((reason, await self.producer.send(self.settings.dlq_topic, value, key=key, headers=headers)))
        return sent

    def on_permanent_error(self, exc: KafkaError, stage: str, records: Records) -> None:
        """A Kafka error retrying cannot fix: shrink the dead letters if it was their size, else stop (see the docstring)."""
        if not kafka_io.permanent(exc):
            return
        if stage == "dead letters" and isinstance(exc, MessageSizeTooLargeError) and self.dlq_limit_bytes > MIN_DLQ_LIMIT_BYTES:
            self.dlq_limit_bytes = max(MIN_DLQ_LIMIT_BYTES, self.dlq_limit_bytes // 4)
            log.error("batch %s: a dead letter was too large for the broker (%s); dead letters now keep at most %d bytes", describe(records), exc, self.dlq_limit_bytes)
            return
        raise FatalStreamError(f"cannot write {stage} to Kafka ({type(exc).__name__}: {exc}); retrying cannot fix this, so serve stops with batch {describe(records)} uncommitted")

    async def apply(self, valid: list[Pending]) -> Applied:
        """3-5: read the states, skip replays, rebuild stale states, step the rounds."""
        students = list(dict.fromkeys(p.event.student_id for p in valid))
        stored = await self.store.read(students)  # 3
        applied = Applied()
        pending = []
        for p in valid:  # 4
            state = stored[p.event.student_id]
            if state is not None and state.already_applied(p.source, p.offset):
                log.info("%s/%d: skipped, student %s applied it before (replay)", p.source, p.offset, p.event.student_id)
                applied.skipped += 1
            else:
                pending.append(p)
        states = {}
        for student in dict.fromkeys(p.event.student_id for p in pending):
            state = stored[student]
            states[student] = state if state is not None else StudentState(student, self.version, model_state={k: v.copy() for k, v in self.initial_rows.items()})
        self.rebuild([s for s in states.values() if s.model_version != self.version])
        for round_ in batcher.rounds(pending, lambda p: p.event.student_id):  # 5
            rows = [states[p.event.student_id] for p in round_]
            times = [event_times(p.event, state) for p, state in zip(round_, rows)]
            p_correct = self.step(rows, [p.event.item_index for p in round_], [p.event.correct for p in round_], times)
            for p, state, p_item in zip(round_, rows, p_correct.tolist()):
                state.record(p.event.item_id, p.event.correct, p.event.ts_ms, p.source, p.offset)
                assert state.mastery is not None  # set by step
                message = encode_mastery(p.event, state.events_applied, self.version, p_item, state.mastery.tolist())
                applied.outputs.append((kafka_io.message_key(p.event.student_id), message))
                applied.event_ts_ms.append(p.event.ts_ms)
        applied.states = list(states.values())
        updated_ms = time.time_ns() // 1_000_000
        for state in applied.states:
            state.updated_ms = updated_ms
        return applied

    def step(self, rows: list[StudentState], items: list[int], correct: list[int], times: list[tuple[float, float]]) -> torch.Tensor:
        """Apply one interaction to each of ``rows`` (distinct students) in place; return p_correct (n,).

        ``times``: [elapsed, lag] seconds per event (time-aware models read them; the others ignore them).
        """
        batch_state = {k: torch.from_numpy(np.stack([r.model_state[k] for r in rows])) for k in self.initial_rows}  # each (n, L, H)
        started = time.perf_counter()
        out = self.backend.step(batch_state, torch.tensor(items, dtype=torch.long), torch.tensor(correct, dtype=torch.long), torch.tensor(times, dtype=torch.float32))
        self.step_seconds.append(time.perf_counter() - started)
        self.step_fills.append(len(rows) / self.settings.batch_size)
        mastery = out.mastery.numpy()  # (n, V)
        for i, row in enumerate(rows):
            row.model_state = {k: v[i].numpy() for k, v in out.state.items()}
            row.mastery = mastery[i]
        return out.p_correct

    def rebuild(self, stale: list[StudentState]) -> None:
        """Re-run this model over each state's window from the initial state (4): a new checkpoint version.

        ``events_applied``, ``window`` and ``offsets`` are kept; window ids this
        vocabulary does not know are not fed to the model.  The window keeps no
        ``elapsed_ms``: a time-aware model is rebuilt with lags from the window's
        timestamps and zero elapsed times.
        """
        if not stale:
            return
        sequences = []
        for state in stale:
            log.info("student %s: state of model %s rebuilt with %s from its %d-event window", state.student_id, state.model_version, self.version, len(state.window))
            sequences.append([(step.item_index, step.correct, step.times) for step in window_steps(state.window, self.vocab.index)])
            state.model_version = self.version
            state.model_state = {k: v.copy() for k, v in self.initial_rows.items()}
            state.mastery = None
        for t in range(max(len(s) for s in sequences)):  # position t of every window is one round
            live = [(state, seq[t]) for state, seq in zip(stale, sequences) if len(seq) > t]
            self.step([state for state, _ in live], [event[0] for _, event in live], [event[1] for _, event in live], [event[2] for _, event in live])

    async def commit(self, records: Records) -> None:
        """8: offset + 1 of each partition's last record."""
        offsets = {tp: rs[-1].offset + 1 for tp, rs in records.items() if rs}
        try:
            await self.consumer.commit(offsets)
            self.committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            self.metrics.kafka_errors += 1
            # the partitions moved on: the next owner replays from its committed offset and 4 skips what 7 wrote
            log.warning("batch %s: commit refused (%s); state offsets make the replay harmless", describe(records), exc)

    async def lag_loop(self, stop: asyncio.Event) -> None:
        """Refresh ``consumer_lag`` about once a second, also while a batch retries."""
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a broker away for a while: the next round tries again
                await self.update_lag()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lag_interval_s)

    async def update_lag(self) -> None:
        """``consumer_lag`` of the assigned partitions: the broker's high-water mark minus the committed offset.

        Committed, not the consumer's position: a batch that is polled but stuck retrying is
        not done, so its events (and every event behind it) count as lag.
        """
        owned = list(self.consumer.assignment())
        if not owned:
            self.metrics.consumer_lag = {}
            return
        ends = await asyncio.wait_for(self.consumer.end_offsets(owned), 5.0)
        lag = {}
        for tp in owned:
            done = self.committed.get(tp)
            if done is None:
                done = await asyncio.wait_for(self.consumer.committed(tp), 5.0)
                if done is None:  # nothing committed yet: from the first offset the group will read
                    done = (await asyncio.wait_for(self.consumer.beginning_offsets([tp]), 5.0))[tp]
                self.committed[tp] = done
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - done)
        self.metrics.consumer_lag = lag


class RebalanceGate(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Holds a revoke until the in-flight batch is committed; counts revokes; sets ``ready`` on assignment."""

    def __init__(self, ready: asyncio.Event) -> None:
        self.lock = asyncio.Lock()  # held by steps 2-8 of a batch
        self.ready = ready
        self.revocations = 0

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:  # the in-flight batch runs through 8 before the partitions go
            self.revocations += 1
            log.info("partitions revoked: %s", ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in revoked)) or "none")

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)) or "none")
        self.ready.set()


def event_times(event: AnswerEvent, state: StudentState) -> tuple[float, float]:
    """[elapsed, lag] seconds of ``event``: lag since the student's last applied event, the rule offline data follows."""
    previous_ts = state.window[-1][2] if state.window else None
    return ((event.elapsed_ms or 0) / 1000.0, lag_seconds(previous_ts, event.ts_ms))


def vocab_payload(checkpoint: Checkpoint) -> dict[str, Any]:
    """What ``keys.model_vocab_key`` holds: lets ``inspect`` name a served model's skills."""
    vocab = checkpoint.vocab
    path = str(Path(checkpoint.path).resolve()) if checkpoint.path else None
    return {"item_column": vocab.item_column, "ids": list(vocab.ids), "names": vocab.names, "checkpoint": path, "model": checkpoint.model.name}


async def run_processor(
    settings: StreamSettings,
    checkpoint: Checkpoint,
    *,
    backend: str = "eager",
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
) -> ProcessorStats:
    """Consume ``settings.in_topic`` until ``stop`` is set; ``ready`` is set once partitions are assigned.

    ``metrics`` and ``readiness`` are filled in for the HTTP endpoint (``http.py``), which
    the caller serves.
    """
    stop = stop or asyncio.Event()
    ready = ready or asyncio.Event()
    metrics = metrics or Metrics(process_metrics=False)
    readiness = readiness or Readiness()
    security = kafka_io.client_options(settings)  # a bad CA file fails here, before any connection
    step_backend = make_backend(backend, checkpoint.model, settings.batch_size)
    metrics.model_version = readiness.model_version = checkpoint.version
    gate = RebalanceGate(ready)
    async with contextlib.AsyncExitStack() as closing:
        store = await StudentStore.from_settings(settings)
        closing.push_async_callback(store.close)
        await kafka_io.ensure_topics(settings.bootstrap, [settings.in_topic, settings.out_topic, settings.dlq_topic], settings.partitions, security=security)
        await store.write_model_vocab(checkpoint.version, vocab_payload(checkpoint))
        producer = kafka_io.make_producer(settings)
        await kafka_io.start(producer, settings.bootstrap)
        closing.push_async_callback(producer.stop)
        consumer = kafka_io.make_consumer(settings, gate)
        await kafka_io.start(consumer, settings.bootstrap)
        closing.push_async_callback(consumer.stop)
        readiness.redis_client, readiness.kafka_client = store.client, producer.client
        closing.callback(setattr, readiness, "kafka_client", None)  # closed clients: not ready any more
        processor = Processor(settings, checkpoint, step_backend, consumer, producer, store, gate, metrics=metrics)
        dlq_limit = await kafka_io.topic_message_limit(settings.bootstrap, settings.dlq_topic, security)
        processor.dlq_limit_bytes = min(kafka_io.PRODUCER_MAX_REQUEST_BYTES, dlq_limit)
        readiness.processor_problem = processor.problem
        closing.callback(setattr, readiness, "processor_problem", None)
        log.info("processing %s -> %s with model %s (group %s, batch %d)", settings.in_topic, settings.out_topic, checkpoint.version, settings.group_id, settings.batch_size)
        await processor.run(stop)
    return processor.stats
