"""Step 3's conversions: any stored state to this model's row.  Pure: no Redis (the processor reads and quarantines).

A stored blob is one of:
- this model's schema-3 row: parsed in bulk;
- this model's row with a tail (window ids this vocabulary lacks): the row, and the
  ids as ``extras`` (a window id unknown here keeps its place as index V + k);
- a schema-1 or schema-2 state of this model: carried over (and written as schema 3);
- a state of another model version (either schema): rebuilt by running this model
  over its stored window (ids unknown to this vocabulary not fed to the model), keeping
  its event count and offsets.  A schema-2 or 3 state names its items (and questions)
  through its model's vocabulary, which the processor reads from Redis first
  (``versions_to_read``);
- unreadable (neither schema, or cut short): reported, for the processor to quarantine;
  the student starts from the model's initial state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from stream_kt.data.sequences import skills_of
from stream_kt.data.vocab import Vocabulary
from stream_kt.models import StepOutput
from stream_kt.service.events import index_for
from stream_kt.service.exceptions import StreamError
from stream_kt.service.state import (
    NO_SKILL,
    SCHEMA_V3,
    SOURCES,
    StateLayout,
    StudentState,
    decode_state,
    extra_ids,
    read_header,
    source_hash,
    window_steps,
)

log = logging.getLogger(__name__)

Step = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], StepOutput
]  # (rows, at, items, correct, times, questions)


class LoadedRows(NamedTuple):
    rows: np.ndarray  # one schema-3 row per student
    extras: dict[int, list[str]]  # row -> window ids this vocabulary lacks
    unreadable: list[tuple[int, str]]  # (row, why): to quarantine; the row is the initial state
    rebuilt: int  # states of another model version, rebuilt over their windows


class Migration:
    """This model's rows from stored blobs of any schema or model version."""

    def __init__(self, layout: StateLayout, initial_rows: dict[str, np.ndarray], vocab: Vocabulary) -> None:
        self.layout = layout
        self.initial_rows = initial_rows  # one student's (L, H) rows
        self.vocab = vocab
        self.num_items = len(vocab)
        self.index_of = {item: i for i, item in enumerate(vocab.ids)}
        self.entry_of = index_for(vocab)  # a window id -> the model's input, as the decoder looks it up

    def versions_to_read(self, blobs: Sequence[bytes | None]) -> set[str]:
        """Model versions whose vocabularies ``rows`` needs: those of other models' schema-2 states."""
        versions = set()
        for blob in blobs:
            if blob is None or self.layout.is_mine(blob):
                continue
            header = read_header(blob)
            if header is not None and not self.has_tail(blob, header):
                versions.add(header["model_version"].rstrip(b"\0").decode(errors="replace"))
        return versions

    def has_tail(self, blob: bytes, header: np.void) -> bool:
        return bool(
            header["schema"] == SCHEMA_V3
            and header["model_version"].rstrip(b"\0") == self.layout.version_bytes
            and len(blob) > self.layout.size
        )

    def rows(
        self,
        students: Sequence[str],
        blobs: Sequence[bytes | None],
        vocab_ids_of: Mapping[str, list[str] | None],
        step: Step,
        question_ids_of: Mapping[str, list[str]] | None = None,
    ) -> LoadedRows:
        """One row per student: bulk where a blob is this model's row, one by one where it is not.

        ``vocab_ids_of``: the vocabulary of each version ``versions_to_read`` named (None:
        not in Redis; such a state is rebuilt from the initial state, its window dropped);
        ``question_ids_of``: their question lists, where they have one.
        """
        rows = self.layout.new(len(students), self.initial_rows)
        extras: dict[int, list[str]] = {}
        unreadable: list[tuple[int, str]] = []
        mine: list[int] = []
        others: list[int] = []
        for i, blob in enumerate(blobs):
            if blob is not None:
                (mine if self.layout.is_mine(blob) else others).append(i)
        if mine:
            rows[mine] = self.layout.parse([blobs[i] for i in mine])  # type: ignore[misc]
        stale: list[tuple[int, StudentState]] = []  # (row, state) to rebuild
        for i in others:
            blob = blobs[i]
            assert blob is not None
            header = read_header(blob)
            if header is not None and self.has_tail(blob, header):
                rows[i] = np.frombuffer(blob[: self.layout.size], self.layout.dtype)[0]  # this model's row, with a tail
                extras[i] = extra_ids(blob, header)
                continue
            try:
                state = self.readable(blob, students[i], vocab_ids_of, question_ids_of or {})
            except StreamError as exc:
                unreadable.append((i, str(exc)))
                continue
            rows[i]["events"], rows[i]["updated_ms"] = state.events_applied, state.updated_ms
            for slot, (source, offset) in enumerate(list(state.offsets.items())[-SOURCES:][::-1]):
                rows[i]["src_hash"][slot] = int(source[1:], 16) if source.startswith("#") else source_hash(source)
                rows[i]["src_offset"][slot] = offset
            if state.model_version == self.layout.model_version and all(
                state.model_state.get(k) is not None for k in self.initial_rows
            ):
                for k in self.initial_rows:  # a schema-1 or 2 state of this model: carried over as it is
                    rows[i][f"state.{k}"] = state.model_state[k]
                if state.mastery is not None:
                    rows[i]["mastery"] = state.mastery
                self.set_window(rows, i, state, extras)
            else:
                stale.append((i, state))
        if stale:
            self.rebuild(rows, stale, extras, step)
        return LoadedRows(rows, extras, unreadable, len(stale))

    def readable(
        self,
        blob: bytes,
        student: str,
        vocab_ids_of: Mapping[str, list[str] | None],
        question_ids_of: Mapping[str, list[str]],
    ) -> StudentState:
        """A state of another model version or schema as a ``StudentState`` whose window names its items."""
        header = read_header(blob)
        if header is None:
            return decode_state(blob, student)  # schema 1 (or a StreamError: unreadable)
        version = header["model_version"].rstrip(b"\0").decode(errors="replace")
        ids = vocab_ids_of.get(version)
        if version == self.layout.model_version:  # a schema-2 state of this model: carried over
            return decode_state(
                blob, student, list(self.vocab.ids), self.layout.state_shapes, question_ids=list(self.vocab.questions)
            )
        state = decode_state(blob, student, ids, question_ids=list(question_ids_of.get(version) or ()))
        if ids is None:
            log.warning(
                "student %s: state of model %s, whose vocabulary is not in Redis: "
                "rebuilt from the initial state, its window dropped",
                student,
                version,
            )
            state.window = []
        return state

    def set_window(self, rows: np.ndarray, row: int, state: StudentState, extras: dict[int, list[str]]) -> None:
        """Row ``row``'s window from the state's (item id, correct, ts), oldest first: ids this vocabulary lacks keep
        their place as index V + k, the k-th of the row's ``extras`` (nothing of the window is lost).  In a layout
        of skill sets, each of an entry's skills is one id; its questions are indexed where the layout has them."""
        capacity = rows["win_item"].shape[1]
        start = max(0, len(state.window) - capacity)
        kept = state.window[start:]
        rows["window_len"][row], rows["window_head"][row] = len(kept), len(kept) % capacity
        foreign: list[str] = []

        def index(item: str) -> int:
            found = self.index_of.get(item)
            if found is not None:
                return found
            if item not in foreign:
                foreign.append(item)
            return self.num_items + foreign.index(item)

        skills = self.layout.skills
        indexes: list[Any] = []
        for item, _, _ in kept:
            if skills == 1:
                indexes.append(index(item))
            else:
                parts = [index(part) for part in skills_of(item)][:skills]
                indexes.append(parts + [NO_SKILL] * (skills - len(parts)))
        if foreign:
            extras[row] = foreign
        if kept:
            rows["win_item"][row, : len(kept)] = indexes
            rows["win_correct"][row, : len(kept)] = [c for _, c, _ in kept]
            rows["win_ts"][row, : len(kept)] = [t for _, _, t in kept]
            if self.layout.questions:
                asked = state.questions[start:] if len(state.questions) == len(state.window) else [""] * len(kept)
                rows["win_question"][row, : len(kept)] = [self.vocab.question_index(q) if q else 0 for q in asked]

    def rebuild(
        self, rows: np.ndarray, stale: list[tuple[int, StudentState]], extras: dict[int, list[str]], step: Step
    ) -> None:
        """Re-run this model over each stale state's window from the initial state: another model version.

        ``events`` and the offsets are kept; window ids this vocabulary does not know are
        not fed to the model (``window_steps``, the rule ``inspect --plot`` follows too).
        """
        plans = []
        question_index = self.vocab.question_index if self.layout.questions else None
        for row, state in stale:
            log.info(
                "student row %d: state rebuilt with %s from its %d-event window",
                row,
                self.layout.model_version,
                len(state.window),
            )
            plans.append((row, window_steps(state.window, self.entry_of.get, state.questions, question_index)))
            self.set_window(rows, row, state, extras)
        for t in range(max((len(steps) for _, steps in plans), default=0)):  # position t of every window is one round
            live = [(row, steps[t]) for row, steps in plans if len(steps) > t]
            at = np.asarray([row for row, _ in live], np.int64)
            items, correct = (
                np.asarray([s.item_index for _, s in live], np.int64),
                np.asarray([s.correct for _, s in live], np.int64),
            )
            questions = np.asarray([s.question for _, s in live], np.int64) if self.layout.questions else None
            step(rows, at, items, correct, np.asarray([s.times for _, s in live], np.float32), questions)


def still_held(rows: np.ndarray, row: int, num_items: int) -> bool:
    """Does row ``row``'s window still hold an id this vocabulary lacks (so its tail must be written)?"""
    held = rows["win_item"][row, : int(rows["window_len"][row])]
    return bool(((held >= num_items) & (held != NO_SKILL)).any())
