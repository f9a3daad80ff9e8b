"""The streaming processor: answer events -> student state in Redis -> model step -> mastery topic.

This module owns the commit order and does the batch's I/O; what happens to a batch in
between is pure code: ``batch.decode_batch`` (2), ``migration.Migration`` (3's
conversions) and ``batch.step_batch`` (4, 5 and the payloads of 6 and 7).  Per batch:

 1. Poll up to B records (no lock held: see Rebalance).
 2. Decode and validate the records into columns (``batch.Events``, through
    ``events.answer_fields``: one tuple per record, no object); an invalid one goes to
    the DLQ with its original key and bytes.  Its delivery is awaited before step 8, so no event is committed before its
    dead letter exists; a crash before 8 sends it again (the DLQ is at-least-once, its
    ``source`` header identifies a repeat).
 3. Read the states of the batch's students in one round trip (MGET; on a cluster one
    pipeline per primary) and decode them as one array of schema-2 rows
    (``state.StateLayout``).  New students start from the model's initial state; a
    schema-1 state is converted; a state of another model version is rebuilt by running
    this model over its stored window (ids unknown to this vocabulary dropped), keeping
    its counts (``migration.py``: the vocabularies it needs are read from Redis first);
    a state that cannot be read is quarantined (see Corrupt states).
 4. Skip events the state already applied (offset <= the state's last offset for the
    event's topic/partition): the replay after a crash between 7 and 8.
 5. Step the rounds (``batcher.round_index``): each student's events in order, the
    students of a round in one fixed-shape step (the smallest of the backends' shapes
    that holds them), the rows updated in place.
 6. Produce every mastery message and await delivery, so outputs exist before any
    state says they were applied.  A crash between 6 and 7 repeats them on replay with
    the same (student_id, seq) and the same values; consumers drop the repeats.
 7. Write the changed states in one round trip, fenced (``StudentStore.write_blobs``):
    a state already as new in Redis is left alone.  Each state carries its offsets, so
    from here on a replay of these events is skipped in 4: losing step 8 is harmless.
    With ``redis_min_replicas`` the same round trip WAITs until that many replicas have
    the states; fewer within ``redis_replica_timeout_ms`` is a Redis error (retried, 8 not run).
    Then add the batch's scored answers to the model version's online quality counts
    (``quality.py``; one more round trip).  A replay skips them as it skips the events,
    so an answer is counted at most once (a crash or Redis error between the two writes
    loses its count, never doubles it).
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

Events the processor fails on: an exception that is not a Redis or Kafka error (a
value the decoder let through that a later step cannot handle: a bug, not an outage)
is logged with its traceback and the batch is redone once from a fresh read.  Failing a
second time, the batch is searched for the first event whose prefix of the batch fails
in 3-5 (a binary search: about log2(B) dry runs of 3-5, which write nothing); that
event goes to the dead-letter topic (reason ``processing_error``, the exception's one
line as ``detail``), is counted (``stream_kt_processing_errors_total``) and the batch
proceeds without it.  When no event makes it fail, the error is not an event's:
serve stops with the batch uncommitted, as before.  So no single event can crash-loop
serve.  An event the decoder itself fails on (not ``InvalidEvent``) is a
``processing_error`` dead letter straight away.

Rebalance: steps 2-8 run under the gate's lock, which ``on_partitions_revoked`` also
takes, so a partition is handed over only after its in-flight batch is committed and
the next owner starts at the committed offset.  Poll (1) runs outside the lock: during
a rebalance ``getmany`` waits for the new assignment, which waits for the revoke
callback.  A batch whose poll overlapped a revoke (the revoke ran while it waited
for the lock, or ``getmany`` itself spanned revoke, join and assign and returned
records of the NEW assignment) is dropped unprocessed, and every partition of it we
still own is rewound to the batch's first offset: the consumer's position had already
moved past those records, and without the rewind the next commit would skip them.
Partitions we lost are re-read by their new owner from the committed offset.  State
offsets (4) are the second line: should a replay slip through anyway (a member that lost
its membership), it is skipped.  And a member that lost its membership but still writes
(a zombie) cannot overwrite a newer state: 7's write is fenced inside Redis.

Corrupt states: a stored blob that is neither schema (or a schema-2 blob cut short) is
moved to ``keys.quarantine_key`` (copied, then the student's key deleted if it still
holds that blob: nothing is lost, and its bytes cannot fence the next write out),
logged, counted (``stream_kt_corrupt_states_total``), and the student starts again from
the model's initial state, ``seq`` from 1: its history cannot be read.  Serve does not
stop or crash-loop on it.

Shutdown: ``stop`` is checked between batches; the in-flight batch runs through 8,
then consumer, producer and Redis are closed.

Metrics (``metrics.py``): counted once per batch, after 8, so a retried batch counts
once; the model steps' fill and duration are kept per step and handed over with the
batch; consumer lag is refreshed from the broker about once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

from stream_kt.backends import StepBackend, make_backend
from stream_kt.checkpoint import Checkpoint
from stream_kt.errors import ConfigError
from stream_kt.service import batcher, kafka_io, keys
from stream_kt.service.batch import BatchResult, DeadLetter, Events, Record, Stepper, decode_batch, one_line, step_batch
from stream_kt.service.events import PROCESSING_ERROR, MasteryEncoder, index_for
from stream_kt.service.exceptions import FatalStreamError
from stream_kt.service.http import Readiness
from stream_kt.service.metrics import Metrics
from stream_kt.service.migration import Migration
from stream_kt.service.quality import Scores
from stream_kt.service.redis_store import REDIS_ERRORS, ReplicasNotReached, StudentStore
from stream_kt.service.state import StateLayout, read_header, source_hash
from stream_kt.settings import StreamSettings

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord]]
MIN_DLQ_LIMIT_BYTES = 4096  # the smallest dead letter: headers and a prefix of the event
PARTITION_CACHE = 1_000_000  # students whose output partition is remembered


@dataclass(frozen=True)
class ProcessorStats:
    """What a processor did, read from its ``Metrics`` (counted once per committed batch) when it stops."""

    events_in: int  # records consumed (valid and invalid)
    outputs: int  # mastery messages of committed batches (a retried batch counts once)
    dlq: int  # dead letters delivered
    skipped_replays: int  # events the stored state had already applied
    batches: int  # batches committed

    @classmethod
    def of(cls, metrics: Metrics) -> ProcessorStats:
        return cls(
            metrics.events_in, metrics.events_out, sum(metrics.dlq.values()), metrics.replays_skipped, metrics.batches
        )


class Stage(enum.Enum):
    """Which step of a batch failed: what a Kafka error there means (``on_permanent_error``)."""

    DEAD_LETTERS = "dead letters"
    STATES = "states"
    OUTPUTS = "mastery outputs"


class BackoffPolicy:
    """Bounded exponential backoff: first_s, 2 first_s, ... up to max_s."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.first_s, self.max_s = first_s, max_s

    def delay_s(self, attempt: int) -> float:
        return min(self.first_s * 2.0 ** (attempt - 1), self.max_s)


def describe(records: Records) -> str:
    """Topic/partition/offset ranges of a batch, for logs: "kt.answers/0@10-73, kt.answers/3@5-20"."""
    return ", ".join(f"{tp.topic}/{tp.partition}@{rs[0].offset}-{rs[-1].offset}" for tp, rs in records.items() if rs)


class Model:
    """A model the processor steps: the served one, or the shadow challenger (``serve --shadow``)."""

    def __init__(self, checkpoint: Checkpoint, backends: dict[int, StepBackend], settings: StreamSettings) -> None:
        """``backends``: the fixed-shape step for each bucket size (``bucket_sizes``), the largest B."""
        self.version = checkpoint.version
        self.vocab = checkpoint.vocab
        self.index_of = index_for(checkpoint.vocab)  # raw item id -> the model's input (a skill set padded to K)
        self.question_index = checkpoint.vocab.question_index if checkpoint.model.reads_questions else None
        initial_rows = {
            k: v[0].numpy().copy() for k, v in next(iter(backends.values())).initial_state(1).items()
        }  # one student's (L, H) rows
        self.stepper = Stepper(backends, initial_rows)
        shapes = {k: v.shape for k, v in initial_rows.items()}
        layout = StateLayout(
            self.version,
            shapes,
            len(self.vocab),
            skills=checkpoint.model.input_width,
            questions=checkpoint.model.reads_questions,
        )
        self.migration = Migration(layout, initial_rows, self.vocab)
        self.encoder = MasteryEncoder(self.version, settings.mastery_format, settings.mastery_dtype)

    def known(self, events: Events) -> Events:
        """``events`` whose item this model's vocabulary has, with its item indexes and question indexes (a shadow's
        vocabulary may differ)."""
        keep = [i for i, item in enumerate(events.item_ids) if self.index_of.get(item) is not None]
        known = events.take(keep)
        known.items = [
            entry for item in known.item_ids if (entry := self.index_of.get(item)) is not None
        ]  # every one: kept above
        index = self.question_index
        known.questions = [index(q) if q and index is not None else 0 for q in known.question_ids]
        return known


class Processor:
    def __init__(
        self,
        settings: StreamSettings,
        checkpoint: Checkpoint,
        backends: dict[int, StepBackend],
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        store: StudentStore,
        gate: RebalanceGate,
        backoff: BackoffPolicy | None = None,
        metrics: Metrics | None = None,
        shadow: tuple[Checkpoint, dict[int, StepBackend]] | None = None,
    ) -> None:
        """``backends``: the fixed-shape step for each bucket size (``bucket_sizes``), the largest B;
        ``shadow``: the challenger's checkpoint and backends."""
        self.settings = settings
        self.model = Model(checkpoint, backends, settings)
        self.shadow = Model(*shadow, settings) if shadow else None
        self.version, self.vocab, self.index_of = self.model.version, self.model.vocab, self.model.index_of
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.gate = gate
        self.backoff = backoff or BackoffPolicy()
        self.metrics = metrics or Metrics(process_metrics=False)
        self.lag_interval_s = 1.0
        self.dlq_limit_bytes = kafka_io.PRODUCER_MAX_REQUEST_BYTES  # run_processor lowers it to the DLQ topic's limit
        self.retrying_since: float | None = None  # monotonic start of the current batch's retries
        self.closing = False  # set when run() ends: the lag loop stops
        self.committed: dict[TopicPartition, int] = {}  # offsets this processor committed
        self.metrics.batch_retry_seconds = self.retry_seconds
        self.source_hashes: dict[tuple[str, int], int] = {}
        self.partition_of: dict[str, int] = {}  # student -> output partition (murmur2 of the key, as the Java client)
        self.vocab_ids_of: dict[
            str, list[str] | None
        ] = {}  # other model versions' vocabularies (from Redis), for rebuilds
        self.question_ids_of: dict[str, list[str]] = {}  # and their question lists
        self.out_partitions: list[int] = [0]  # the mastery topic's partitions (run_processor asks the broker)
        self.shadow_partitions: list[int] = [0]  # the shadow topic's, where outputs of the shadow go out

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
            self.closing = True  # ends the lag loop even where a client call swallows the cancellation
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
        log.info(
            "batch %s: polled across a rebalance, dropped; partitions still owned rewound to re-read it",
            describe(records),
        )

    async def poll(self, stop: asyncio.Event) -> Records:
        """1: getmany, abandoned when ``stop`` is set (it waits out a group join, ignoring its timeout)."""
        fetch = asyncio.ensure_future(
            self.consumer.getmany(timeout_ms=self.settings.max_wait_ms, max_records=self.settings.batch_size)
        )
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
        tps = list(records)
        events, letters = self.decode(records)  # 2
        attempt = failures = 0
        while True:
            stage = Stage.DEAD_LETTERS
            try:
                deliveries = await self.send_dead_letters(letters)  # 2
                stage = Stage.STATES
                result = await self.apply(events, tps)  # 3, 4, 5
                shadowed = (
                    await self.apply_shadow_safely(events, tps, records) if self.shadow else None
                )  # 3, 4, 5 for the challenger
                stage = Stage.OUTPUTS
                outputs = result.outputs
                sending = await kafka_io.send_keyed(
                    self.producer, self.settings.out_topic, outputs.keys, outputs.values, outputs.partitions
                )  # 6
                if shadowed is not None and self.settings.shadow_topic:
                    o = shadowed.outputs
                    sending += await kafka_io.send_keyed(
                        self.producer, self.settings.shadow_topic, o.keys, o.values, o.partitions
                    )
                await asyncio.gather(*sending)
                delivered_ms = time.time_ns() // 1_000_000
                stage = Stage.STATES
                scored = await self.write(result, self.model, records)  # 7
                shadow_scored = (
                    await self.write(shadowed, self.shadow, records) if shadowed is not None and self.shadow else None
                )
                stage = Stage.DEAD_LETTERS
                await asyncio.gather(*deliveries)  # 2's deliveries, before 8
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
                log.error(
                    "batch %s: attempt %d failed (%s: %s); nothing committed, retrying in %.1f s",
                    describe(records),
                    attempt,
                    type(exc).__name__,
                    exc,
                    delay_s,
                )
                await wait_unless_stopped(stop, delay_s)
                if stop.is_set():
                    log.warning(
                        "batch %s: stopping with the batch uncommitted; the next owner replays it", describe(records)
                    )
                    return
            except FatalStreamError:
                raise
            except Exception as exc:  # not an outage: an event this processor cannot handle, or a bug
                failures += 1
                log.error(
                    "batch %s: failed in %s (%s: %s); nothing committed",
                    describe(records),
                    stage.value,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
                if failures < 2:
                    continue  # once more from a fresh read: it may not be an event's fault
                culprit = await self.first_failing(events, tps)
                if culprit is None:
                    raise  # no event makes it fail: stop with the batch uncommitted
                events, letter = self.set_aside(events, culprit, records, tps, exc)
                letters.append(letter)
                self.metrics.processing_errors += 1
                failures = 1  # the rest may hold another such event: search again on its next failure
        self.retrying_since = None
        await self.commit(records)  # 8
        events_in = sum(len(rs) for rs in records.values())
        self.metrics.record_batch(
            events_in, len(result.outputs.values), len(result.replays), (letter.reason for letter in letters)
        )
        self.metrics.record_steps(*self.model.stepper.take_stats())
        self.metrics.record_latencies_ms(delivered_ms, result.outputs.event_ts_ms)
        self.metrics.record_quality(self.version, *scored)
        if self.shadow is not None and shadow_scored is not None:
            self.shadow.stepper.take_stats()
            self.metrics.record_quality(self.shadow.version, *shadow_scored)
        log.debug(
            "batch %s: %d applied, %d skipped, %d dead letters",
            describe(records),
            len(result.outputs.values),
            len(result.replays),
            len(letters),
        )

    def decode(self, records: Records) -> tuple[Events, list[DeadLetter]]:
        """2: the valid events as columns, and the dead letters to send (``batch.decode_batch``)."""
        tps = list(records)

        def headers(reason: str, detail: str, source: int, offset: int) -> list[tuple[str, bytes]]:
            tp = tps[source]
            # the detail may quote the event's fields: the DLQ header carries it, the log only at DEBUG
            log.warning("%s/%d/%d: dead letter (%s)", tp.topic, tp.partition, offset, reason)
            log.debug("%s/%d/%d: %s", tp.topic, tp.partition, offset, detail)
            return kafka_io.dead_letter_headers(reason, detail, tp.topic, tp.partition, offset)

        flat = (Record(source, r.offset, r.key, r.value) for source, rs in enumerate(records.values()) for r in rs)
        events, letters = decode_batch(
            flat,
            self.index_of,
            self.settings.max_event_bytes,
            headers,
            self.vocab.question_skills,
            self.model.question_index,
        )
        self.metrics.processing_errors += sum(letter.reason == PROCESSING_ERROR for letter in letters)
        return events, letters

    async def first_failing(self, events: Events, tps: list[TopicPartition]) -> int | None:
        """The first event whose prefix of ``events`` fails in steps 3-5 (dry runs: nothing is written), or None."""

        async def fails(n: int) -> bool:
            try:
                await self.apply(events.take(list(range(n))), tps)
            except (*REDIS_ERRORS, KafkaError, FatalStreamError):
                raise  # an outage during the search: the batch is retried as any other
            except Exception:
                return True
            return False

        if not len(events) or not await fails(len(events)):
            return None
        good, bad = 0, len(events)  # the prefix of ``good`` events applies, that of ``bad`` fails
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (good, middle) if await fails(middle) else (middle, bad)
        return bad - 1

    def set_aside(
        self, events: Events, culprit: int, records: Records, tps: list[TopicPartition], exc: Exception
    ) -> tuple[Events, DeadLetter]:
        """``events`` without event ``culprit``, and that event's ``processing_error`` dead letter."""
        tp, offset = tps[events.sources[culprit]], events.offsets[culprit]
        record = next(r for r in records[tp] if r.offset == offset)
        log.error(
            "%s/%d/%d: dead letter (%s): the batch failed on this event twice (%s)",
            tp.topic,
            tp.partition,
            offset,
            PROCESSING_ERROR,
            one_line(exc),
        )
        headers = kafka_io.dead_letter_headers(PROCESSING_ERROR, one_line(exc), tp.topic, tp.partition, offset)
        rest = events.take([i for i in range(len(events)) if i != culprit])
        return rest, DeadLetter(PROCESSING_ERROR, record.key, record.value, headers)

    async def send_dead_letters(self, letters: list[DeadLetter]) -> list[asyncio.Future[Any]]:
        """2: send each dead letter, made to fit ``dlq_limit_bytes`` (a truncated one is logged with its source)."""
        deliveries = []
        for reason, key, value, headers in letters:
            key, value, headers = kafka_io.dead_letter(key, value, headers, self.dlq_limit_bytes)
            if headers and headers[-1][0] == "sha256":
                source = dict(headers).get("source", b"?").decode()
                log.warning(
                    "%s: dead letter (%s) truncated to %d bytes to fit the dead-letter topic; "
                    "the original size and SHA-256 are in its headers",
                    source,
                    reason,
                    len(value or b""),
                )
            deliveries.append(await self.producer.send(self.settings.dlq_topic, value, key=key, headers=headers))
        return deliveries

    def on_permanent_error(self, exc: KafkaError, stage: Stage, records: Records) -> None:
        """A Kafka error retrying cannot fix: shrink the dead letters if it was their size, else
        stop (see the docstring)."""
        if not kafka_io.permanent(exc):
            return
        if (
            stage is Stage.DEAD_LETTERS
            and isinstance(exc, MessageSizeTooLargeError)
            and self.dlq_limit_bytes > MIN_DLQ_LIMIT_BYTES
        ):
            self.dlq_limit_bytes = max(MIN_DLQ_LIMIT_BYTES, self.dlq_limit_bytes // 4)
            log.error(
                "batch %s: a dead letter was too large for the broker (%s); dead letters now keep at most %d bytes",
                describe(records),
                exc,
                self.dlq_limit_bytes,
            )
            return
        raise FatalStreamError(
            f"cannot write {stage.value} to Kafka ({type(exc).__name__}: {exc}); retrying cannot fix this, "
            f"so serve stops with batch {describe(records)} uncommitted"
        )

    async def apply(self, events: Events, tps: list[TopicPartition]) -> BatchResult:
        """3: read the states; 4, 5 and the payloads of 6 and 7: ``batch.step_batch``."""
        if not len(events):
            return BatchResult.empty()
        codes, students = batcher.codes_of(events.students)
        blobs = await self.store.read_blobs(students)  # 3
        await self.promote(students, blobs)
        rows, extras = await self.load_rows(students, blobs)
        hashes = np.asarray([self.source_hash(tp) for tp in tps], np.uint64)
        model = self.model
        result = step_batch(
            events,
            codes,
            students,
            rows,
            extras,
            hashes,
            model.stepper,
            model.encoder,
            self.partition,
            time.time_ns() // 1_000_000,
        )  # 4, 5
        for i in result.replays:
            tp = tps[events.sources[i]]
            log.info(
                "%s/%d/%d: skipped, student %s applied it before (replay)",
                tp.topic,
                tp.partition,
                events.offsets[i],
                events.students[i],
            )
        return result

    async def apply_shadow_safely(
        self, events: Events, tps: list[TopicPartition], records: Records
    ) -> BatchResult | None:
        """``apply_shadow``, where a failure of the challenger's own (not Redis's or Kafka's) never touches the served
        model: the shadow skips the batch (None), its states fall behind, and a promotion rebuilds those students."""
        try:
            return await self.apply_shadow(events, tps)
        except (*REDIS_ERRORS, KafkaError, FatalStreamError):
            raise
        except Exception as exc:
            self.metrics.shadow_errors += 1
            log.error(
                "batch %s: the shadow model failed (%s); it skips this batch",
                describe(records),
                one_line(exc),
                exc_info=exc,
            )
            return None

    async def apply_shadow(self, events: Events, tps: list[TopicPartition]) -> BatchResult:
        """3-5 for the shadow model, from its own states: a student it has not seen starts from the served state
        (rebuilt by the shadow over its window, as a new model version would be)."""
        assert self.shadow is not None
        shadow = self.shadow
        known = shadow.known(events)
        if not len(known):
            return BatchResult.empty()
        codes, students = batcher.codes_of(known.students)
        blobs = await self.store.read_blobs(students, shadow=shadow.version)
        unseen = [i for i, blob in enumerate(blobs) if blob is None]
        if unseen:
            for i, blob in zip(unseen, await self.store.read_blobs([students[i] for i in unseen])):
                blobs[i] = blob
        rows, extras = await self.load_rows(students, blobs, shadow)
        hashes = np.asarray([self.source_hash(tp) for tp in tps], np.uint64)
        partition_of = self.shadow_partition if self.settings.shadow_topic else (lambda student: 0)
        return step_batch(
            known,
            codes,
            students,
            rows,
            extras,
            hashes,
            shadow.stepper,
            shadow.encoder,
            partition_of,
            time.time_ns() // 1_000_000,
        )

    async def write(self, result: BatchResult, model: Model, records: Records) -> tuple[np.ndarray, np.ndarray]:
        """7: a model's changed states (the shadow's under its own keys), then its scored answers; those answers."""
        shadow = model is not self.model
        writes = result.writes
        try:
            refused = await self.store.write_blobs(
                writes.students, writes.blobs, writes.events, shadow=model.version if shadow else None
            )
        except ReplicasNotReached:
            self.metrics.redis_wait_failures += 1  # and retried as any Redis error: nothing committed
            raise
        if refused:
            log.warning(
                "batch %s: %d students' %sstates in Redis were as new or newer "
                "(another processor wrote them): left as they are",
                describe(records),
                len(refused),
                "shadow " if shadow else "",
            )
        scored = scored_answers(result, refused)
        if len(scored[0]):
            await self.store.add_quality(model.version, Scores.of(*scored))  # the fleet's online quality
        return scored

    async def promote(self, students: list[str], blobs: list[bytes | None]) -> None:
        """Promotion with warm states: where a student's served state is another model version's, a shadow state of
        this version that has applied exactly as many events replaces it (it is what serving this version from the
        shadow's start would have made), so it is not rebuilt.  ``blobs`` are replaced in place."""
        others = [
            i for i, blob in enumerate(blobs) if blob is not None and not self.model.migration.layout.is_mine(blob)
        ]
        if not others:
            return
        warm = await self.store.read_blobs([students[i] for i in others], shadow=self.version)
        for i, candidate in zip(others, warm):
            served = blobs[i]
            if candidate is None or served is None or not self.model.migration.layout.is_mine(candidate):
                continue
            header, own = read_header(served), read_header(candidate)
            if header is not None and own is not None and int(header["events"]) == int(own["events"]):
                blobs[i] = candidate
                self.metrics.warm_promotions += 1
                log.info(
                    "student %s: the shadow state of %s takes over (%d events, no rebuild)",
                    students[i],
                    self.version,
                    int(own["events"]),
                )

    async def load_rows(
        self, students: list[str], blobs: list[bytes | None], model: Model | None = None
    ) -> tuple[np.ndarray, dict[int, list[str]]]:
        """3: one schema-2 row per student (``migration.py``), and the window ids rows hold that this vocabulary lacks.

        Reads the vocabularies of other model versions it needs from Redis first, and
        quarantines the served states it cannot read afterwards (an unreadable shadow
        state just starts over).
        """
        model = model or self.model
        for version in model.migration.versions_to_read(blobs) - self.vocab_ids_of.keys():
            payload = await self.store.read_model_vocab(version)
            self.vocab_ids_of[version] = list(payload["ids"]) if payload else None
            self.question_ids_of[version] = list(payload.get("questions") or ()) if payload else []
        loaded = model.migration.rows(students, blobs, self.vocab_ids_of, model.stepper, self.question_ids_of)
        self.metrics.state_rebuilds += loaded.rebuilt if model is self.model else 0
        for row, why in loaded.unreadable:
            blob = blobs[row]
            assert blob is not None
            if model is self.model:
                await self.quarantine(students[row], blob, why)
            else:
                log.warning("student %s: shadow state unreadable (%s): the shadow starts it over", students[row], why)
        return loaded.rows, loaded.extras

    async def quarantine(self, student: str, blob: bytes, why: str) -> None:
        """Keep an unreadable state under ``keys.quarantine_key``; the student starts again from the initial state."""
        await self.store.quarantine(student, blob)
        self.metrics.corrupt_states += 1
        log.error(
            "student %s: stored state unreadable (%s): copied to %s, the student starts again from the initial state",
            student,
            why,
            keys.quarantine_key(student, self.store.prefix),
        )

    def source_hash(self, tp: TopicPartition) -> int:
        key = (tp.topic, tp.partition)
        if key not in self.source_hashes:
            self.source_hashes[key] = source_hash(kafka_io.source(tp.topic, tp.partition))
        return self.source_hashes[key]

    def shadow_partition(self, student: str) -> int:
        return kafka_io.partition_of(kafka_io.message_key(student), self.shadow_partitions)

    def partition(self, student: str) -> int:
        """The mastery topic's partition of ``student``'s messages (cached: murmur2 in Python is slow)."""
        found = self.partition_of.get(student)
        if found is None:
            if len(self.partition_of) > PARTITION_CACHE:
                self.partition_of.clear()
            found = self.partition_of[student] = kafka_io.partition_of(
                kafka_io.message_key(student), self.out_partitions
            )
        return found

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
        while not stop.is_set() and not self.closing:
            with contextlib.suppress(Exception):  # a broker away for a while: the next round tries again
                await self.update_lag()
            await wait_unless_stopped(stop, self.lag_interval_s)

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
            log.info(
                "partitions revoked: %s", ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in revoked)) or "none"
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions assigned: %s", ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)) or "none"
        )
        self.ready.set()


def scored_answers(result: BatchResult, refused: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The (p_correct, answer) pairs a batch adds to the online quality: its applied answers but each student's
    first (predicted from no history: ``evaluate`` does not score it either), and none whose state write
    was refused (the processor that wrote the newer state scored them)."""
    answers = result.answers
    keep = answers.seq > 1
    if refused:
        gone = {result.writes.students[i].encode() for i in refused}
        keep &= np.asarray([key not in gone for key in result.outputs.keys], bool)
    return answers.p_correct[keep], answers.correct[keep]


def bucket_sizes(batch_size: int) -> list[int]:
    """The fixed shapes a processor compiles: 64, 256, 1024, ... (x4) below ``batch_size``, and ``batch_size``.

    A round steps in the smallest that holds it: light load pays for small steps, heavy
    load gets full ones, and nothing is compiled per call.
    """
    sizes = {batch_size}
    size = 64
    while size < batch_size:
        sizes.add(size)
        size *= 4
    return sorted(sizes)


def vocab_payload(checkpoint: Checkpoint) -> dict[str, Any]:
    """What ``keys.model_vocab_key`` holds: lets ``inspect`` name a served model's skills, and a later model
    version read this one's windows (their skills and questions)."""
    vocab = checkpoint.vocab
    path = str(Path(checkpoint.path).resolve()) if checkpoint.path else None
    payload: dict[str, Any] = {
        "item_column": vocab.item_column,
        "ids": list(vocab.ids),
        "names": vocab.names,
        "checkpoint": path,
        "model": checkpoint.model.name,
    }
    return payload | (
        {"skills": vocab.skills, "max_skills": vocab.max_skills, "questions": list(vocab.questions)}
        if not vocab.one_entry_an_answer
        else {}
    )


async def wait_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set.  Not ``wait_for(stop.wait(), seconds)``: on
    Python 3.11 a cancellation arriving as its timeout fires comes out as ``TimeoutError``, so
    a loop that suppresses the timeout would swallow the cancellation and never end."""
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


class StoppedStartingUp(Exception):
    """``stop`` was set before start-up was done."""


@contextlib.asynccontextmanager
async def until_stopped(stop: asyncio.Event) -> AsyncIterator[None]:
    """Run the body, cut short (``StoppedStartingUp``) as soon as ``stop`` is set.

    A timeout with no deadline that ``stop`` moves to now: ``asyncio.timeout`` cancels the
    task and takes the cancellation back correctly, also inside other timeouts.
    """
    loop = asyncio.get_running_loop()
    scope = asyncio.timeout(None)
    inside = True

    def expire(waiter: asyncio.Future[Any]) -> None:
        if inside and not waiter.cancelled():
            scope.reschedule(loop.time())

    waiter = asyncio.ensure_future(stop.wait())
    waiter.add_done_callback(expire)
    try:
        async with scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        raise StoppedStartingUp from None
    finally:
        inside = False
        waiter.cancel()


async def run_processor(
    settings: StreamSettings,
    checkpoint: Checkpoint,
    *,
    backend: str | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
    shadow: Checkpoint | None = None,
) -> ProcessorStats:
    """Consume ``settings.in_topic`` until ``stop`` is set; ``ready`` is set once partitions are assigned.

    ``shadow``: a challenger stepped beside ``checkpoint`` (``settings.shadow`` names it for ``serve``).

    ``backend``: the step backend's name (default: ``settings.backend``).

    ``metrics`` and ``readiness`` are filled in for the HTTP endpoint (``http.py``), which
    the caller serves.
    """
    stop = stop or asyncio.Event()
    ready = ready or asyncio.Event()
    metrics = metrics or Metrics(process_metrics=False)
    readiness = readiness or Readiness()
    security = kafka_io.client_options(settings)  # a bad CA file fails here, before any connection
    backends = {
        size: make_backend(backend or settings.backend, checkpoint.model, size)
        for size in bucket_sizes(settings.batch_size)
    }
    if shadow is not None and shadow.version == checkpoint.version:
        raise ConfigError(f"the shadow is the served model itself ({shadow.version}): shadow a different checkpoint")
    shadowing = (
        (
            shadow,
            {
                size: make_backend(backend or settings.backend, shadow.model, size)
                for size in bucket_sizes(settings.batch_size)
            },
        )
        if shadow
        else None
    )
    metrics.model_version = readiness.model_version = checkpoint.version
    metrics.quality_window = settings.quality_window
    gate = RebalanceGate(ready)
    async with contextlib.AsyncExitStack() as closing:
        try:
            async with until_stopped(stop):  # a signal during start-up ends it at once: nothing was consumed yet
                store = await StudentStore.from_settings(settings)
                closing.push_async_callback(store.close)
                async with kafka_io.connecting(settings.bootstrap, settings.kafka_connect_timeout_s):
                    topics = [settings.in_topic, settings.out_topic, settings.dlq_topic] + (
                        [settings.shadow_topic] if shadow and settings.shadow_topic else []
                    )
                    await kafka_io.ensure_topics(
                        settings.bootstrap, topics, settings.partitions, **kafka_io.topic_options(settings)
                    )
                    await store.write_model_vocab(checkpoint.version, vocab_payload(checkpoint))
                    if shadow is not None:
                        await store.write_model_vocab(shadow.version, vocab_payload(shadow))
                    producer = kafka_io.make_producer(settings)
                    closing.push_async_callback(producer.stop)  # before start: a start cut short is closed too
                    await kafka_io.start(producer, settings.bootstrap)
                    consumer = kafka_io.make_consumer(settings, gate)
                    closing.push_async_callback(consumer.stop)
                    await kafka_io.start(consumer, settings.bootstrap)
                    readiness.redis_client, readiness.kafka_client = store.client, producer.client
                    closing.callback(setattr, readiness, "kafka_client", None)  # closed clients: not ready any more
                    processor = Processor(
                        settings,
                        checkpoint,
                        backends,
                        consumer,
                        producer,
                        store,
                        gate,
                        metrics=metrics,
                        shadow=shadowing,
                    )
                    processor.out_partitions = sorted(await producer.partitions_for(settings.out_topic))
                    if shadow is not None and settings.shadow_topic:
                        processor.shadow_partitions = sorted(await producer.partitions_for(settings.shadow_topic))
                    dlq_limit = await kafka_io.topic_message_limit(settings.bootstrap, settings.dlq_topic, security)
        except StoppedStartingUp:
            log.info("stopped during start-up")
            return ProcessorStats.of(metrics)  # nothing counted yet
        processor.dlq_limit_bytes = min(kafka_io.PRODUCER_MAX_REQUEST_BYTES, dlq_limit)
        readiness.processor_problem = processor.problem
        metrics.fleet_quality = store.read_quality
        closing.callback(setattr, metrics, "fleet_quality", None)
        closing.callback(setattr, readiness, "processor_problem", None)
        log.info(
            "processing %s -> %s with model %s (group %s, batch %d)",
            settings.in_topic,
            settings.out_topic,
            checkpoint.version,
            settings.group_id,
            settings.batch_size,
        )
        if shadow is not None:
            log.info(
                "shadow model %s: stepped on the same events, scored online, outputs to %s",
                shadow.version,
                settings.shadow_topic or "nowhere",
            )
        await processor.run(stop)
    return ProcessorStats.of(metrics)
