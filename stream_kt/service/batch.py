"""The processor's middle: a batch's records in, its outputs and state blobs out.  Pure: no Kafka, no Redis.

``decode_batch`` is step 2: the records' bytes become ``Events`` (the valid ones, as
columns) and ``DeadLetter``s.  ``step_batch`` is steps 4 and 5 over states already
read (``migration.py`` made them this model's rows): it skips replays, steps the
rounds and builds what steps 6 and 7 send, ``Outputs`` (mastery messages) and
``StateWrites`` (state blobs).  ``processor.py`` does the I/O around them in the
numbered order; ``tests/service/test_batch.py`` checks them on their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np
import torch

from stream_kt.backends import StepBackend
from stream_kt.models import StepOutput
from stream_kt.service import batcher
from stream_kt.service.events import PROCESSING_ERROR, Entry, MasteryEncoder, answer_fields
from stream_kt.service.exceptions import InvalidEvent
from stream_kt.service.migration import still_held
from stream_kt.service.state import StateLayout

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class Record(NamedTuple):
    """What step 2 needs of a polled record: where it came from, and its key and bytes."""

    source: int  # index into the batch's (topic, partition) sources
    offset: int
    key: bytes | None
    value: bytes | None


class DeadLetter(NamedTuple):
    """An invalid event, to be sent to the dead-letter topic with its original key and bytes."""

    reason: str  # a code from ``events.REASONS``, or ``events.PROCESSING_ERROR``
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass
class Events:
    """A batch's valid events, in consumption order, as columns."""

    students: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    items: list[Entry] = field(
        default_factory=list
    )  # the model's input: vocabulary index, or a skill set padded to K with V
    correct: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    event_ids: list[Any] = field(default_factory=list)
    elapsed_ms: list[int] = field(default_factory=list)  # -1: unknown
    sources: list[int] = field(default_factory=list)  # index into the batch's (topic, partition) sources
    offsets: list[int] = field(default_factory=list)
    question_ids: list[str] = field(default_factory=list)  # "" where the event names none
    questions: list[int] = field(
        default_factory=list
    )  # the model's question index (0: none or unknown; 0 for models that read none)

    def __len__(self) -> int:
        return len(self.students)

    def take(self, keep: list[int]) -> Events:
        """The events at positions ``keep``, in that order."""
        return Events(*([column[i] for i in keep] for column in (getattr(self, f.name) for f in fields(self))))


class Outputs(NamedTuple):
    """Step 6: one mastery message per applied event, with its key and the mastery topic's partition."""

    keys: list[bytes]
    values: list[bytes]
    partitions: list[int]
    event_ts_ms: list[int]  # each output's event ts, for the end-to-end latency


class StateWrites(NamedTuple):
    """Step 7: the changed students' state blobs and their event counts (the fence)."""

    students: list[str]
    blobs: list[bytes]
    events: list[int]


class Answers(NamedTuple):
    """Each output's prediction beside the answer it was made before (online quality, ``quality.py``)."""

    p_correct: np.ndarray  # (n,) float32
    correct: np.ndarray  # (n,) int64
    seq: np.ndarray  # (n,) the student's event count after the answer: 1 is a first answer


class BatchResult(NamedTuple):
    outputs: Outputs
    writes: StateWrites
    replays: list[int]  # events skipped in 4: a state had applied them before
    answers: Answers  # aligned with ``outputs``

    @classmethod
    def empty(cls) -> BatchResult:
        nothing = np.zeros(0, np.int64)
        return cls(
            Outputs([], [], [], []), StateWrites([], [], []), [], Answers(np.zeros(0, np.float32), nothing, nothing)
        )


DeadLetterHeaders = Callable[[str, str, int, int], Headers]  # (reason, detail, source, offset) -> headers


def decode_batch(
    records: Iterable[Record],
    index_of: Mapping[str, Entry],
    max_bytes: int,
    headers: DeadLetterHeaders,
    question_skills: dict[str, str] | None = None,
    question_index: Callable[[str], int] | None = None,
) -> tuple[Events, list[DeadLetter]]:
    """2: the valid events as columns, and a dead letter for each other record (``index_of``: ``events.index_for``
    of the model's vocabulary; ``question_skills``: the checkpoint's map, for events that name only their
    question; ``question_index``: for a model that reads questions, ``Vocabulary.question_index``).

    An exception of the decoder other than ``InvalidEvent`` (a bug) is a dead letter
    too, reason ``processing_error``: no record's bytes can raise past this step.
    """
    events, letters = Events(), []
    decode = answer_fields
    for record in records:
        try:
            student, item_id, item, correct, ts, event_id, elapsed, question = decode(
                record.value, index_of, max_bytes, question_skills
            )
        except InvalidEvent as exc:
            letters.append(
                DeadLetter(
                    exc.reason, record.key, record.value, headers(exc.reason, exc.detail, record.source, record.offset)
                )
            )
            continue
        except Exception as exc:  # a bug in the decoder: this event must not stop the stream
            log.error("offset %d: the decoder failed", record.offset, exc_info=exc)
            letters.append(
                DeadLetter(
                    PROCESSING_ERROR,
                    record.key,
                    record.value,
                    headers(PROCESSING_ERROR, one_line(exc), record.source, record.offset),
                )
            )
            continue
        events.students.append(student)
        events.item_ids.append(item_id)
        events.items.append(item)
        events.question_ids.append(question or "")
        events.questions.append(question_index(question) if question and question_index is not None else 0)
        events.correct.append(correct)
        events.ts.append(ts)
        events.event_ids.append(event_id)
        events.elapsed_ms.append(-1 if elapsed is None else elapsed)
        events.sources.append(record.source)
        events.offsets.append(record.offset)
    return events, letters


class Stepper:
    """One interaction for each of some rows (distinct students), in the smallest fixed shape that holds them.

    The rows' model state and mastery are updated in place; each step's fill (rows / its
    shape) and duration are kept until ``take_stats``.
    """

    def __init__(self, backends: dict[int, StepBackend], state_names: Iterable[str]) -> None:
        self.backends = dict(sorted(backends.items()))  # bucket size -> the step of that shape
        self.state_names = tuple(state_names)
        self.fills: list[float] = []
        self.seconds: list[float] = []

    def __call__(
        self,
        rows: np.ndarray,
        at: np.ndarray,
        items: np.ndarray,
        correct: np.ndarray,
        times: np.ndarray,
        questions: np.ndarray | None = None,
    ) -> StepOutput:
        """Rows ``at`` answer ``items`` ((n,), or (n, K) skill sets padded with V); ``questions`` (n,)
        where the model reads them."""
        backend = next(
            (b for size, b in self.backends.items() if size >= len(at)), next(reversed(self.backends.values()))
        )
        state = {k: torch.from_numpy(rows[f"state.{k}"][at]) for k in self.state_names}  # each (n, L, H), a copy
        started = time.perf_counter()
        asked = None if questions is None else torch.from_numpy(questions)
        out = backend.step(state, torch.from_numpy(items), torch.from_numpy(correct), torch.from_numpy(times), asked)
        self.seconds.append(time.perf_counter() - started)
        self.fills.append(min(1.0, len(at) / backend.batch_size))
        for k, v in out.state.items():
            rows[f"state.{k}"][at] = v.numpy()
        rows["mastery"][at] = out.mastery.numpy()
        return out

    def take_stats(self) -> tuple[list[float], list[float]]:
        """The fills and durations of the steps since the last call."""
        stats = (self.fills, self.seconds)
        self.fills, self.seconds = [], []
        return stats


def step_batch(
    events: Events,
    codes: np.ndarray,
    students: list[str],
    rows: np.ndarray,
    extras: dict[int, list[str]],
    source_hashes: np.ndarray,
    step: Stepper,
    encoder: MasteryEncoder,
    partition_of: Callable[[str], int],
    now_ms: int,
) -> BatchResult:
    """4, 5 and the payloads of 6 and 7.

    ``codes[i]`` is event i's row in ``rows`` (one row per student of ``students``, read
    in 3), ``extras`` the window ids rows hold that this vocabulary lacks, and
    ``source_hashes[s]`` the hash of source s.  ``rows`` are updated in place.
    """
    if not len(events):
        return BatchResult.empty()
    items, correct, ts = (
        np.asarray(events.items, np.int64),
        np.asarray(events.correct, np.int64),
        np.asarray(events.ts, np.int64),
    )
    questions = np.asarray(events.questions, np.int64) if "win_question" in (rows.dtype.names or ()) else None
    elapsed_ms, offsets = np.asarray(events.elapsed_ms, np.int64), np.asarray(events.offsets, np.int64)
    sources = source_hashes[np.asarray(events.sources, np.int64)]
    replays = batcher.applied_before(rows["src_hash"][codes], rows["src_offset"][codes], sources, offsets)  # 4
    live = np.flatnonzero(~replays)
    p_correct = np.zeros(len(codes), np.float32)
    mastery = np.zeros((len(codes), rows["mastery"].shape[1]), np.float32)
    seq = np.zeros(len(codes), np.int64)
    rounds = batcher.round_index(codes[live])
    for r in range(int(rounds.max()) + 1 if len(live) else 0):  # 5
        at = live[rounds == r]
        row = codes[at]
        asked = None if questions is None else questions[at]
        out = step(rows, row, items[at], correct[at], batcher.event_times(rows, row, ts[at], elapsed_ms[at]), asked)
        p_correct[at], mastery[at] = out.p_correct.numpy(), out.mastery.numpy()
        batcher.push_window(rows, row, items[at], correct[at], ts[at], asked)
        batcher.record_sources(rows, row, sources[at], offsets[at])
        rows["events"][row] += 1
        seq[at] = rows["events"][row]
    changed = np.unique(codes[live])
    rows["updated_ms"][changed] = now_ms
    num_items = rows["mastery"].shape[1]
    kept = {
        position: ids
        for position, row in enumerate(changed.tolist())
        if (ids := extras.get(row)) and still_held(rows, row, num_items)
    }
    writes = StateWrites(
        [students[i] for i in changed.tolist()],
        StateLayout.to_blobs(rows[changed], kept),
        rows["events"][changed].tolist(),
    )
    order = live.tolist()
    who = [events.students[i] for i in order]
    values = encoder.encode(
        who, seq[live].tolist(), [events.event_ids[i] for i in order], [events.ts[i] for i in order],
        [events.item_ids[i] for i in order], p_correct[live].tolist(), mastery[live],
    )  # fmt: skip
    outputs = Outputs(
        [student.encode() for student in who], values, [partition_of(s) for s in who], [events.ts[i] for i in order]
    )
    return BatchResult(
        outputs, writes, np.flatnonzero(replays).tolist(), Answers(p_correct[live], correct[live], seq[live])
    )


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
