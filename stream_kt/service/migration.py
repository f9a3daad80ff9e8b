"""Step 3's conversions: any stored state to this model's row.  Pure: no Redis (the processor reads and quarantines).

A stored blob is one of:
- this model's schema-2 row: parsed in bulk;
- this model's row with a tail (window ids this vocabulary lacks): the row, and the
  ids as ``extras`` (a window id unknown here keeps its place as index V + k);
- a schema-1 state of this model: carried over;
- a state of another model version (either schema): rebuilt by running this model
  over its stored window (ids unknown to this vocabulary not fed to the model), keeping
  its event count and offsets.  A schema-2 state names its items through its model's
  vocabulary, which the processor reads from Redis first (``versions_to_read``);
- unreadable (neither schema, or cut short): reported, for the processor to quarantine;
  the student starts from the model's initial state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from stream_kt.data.vocab import Vocabulary
from stream_kt.models import StepOutput
from stream_kt.service.exceptions import StreamError
from stream_kt.service.state import SOURCES, StateLayout, StudentState, decode_state, extra_ids, read_header, source_hash, window_steps

log = logging.getLogger(__name__)

Window = list[tuple[str, int, int]]  # (item id, correct, ts), oldest first
Step = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], StepOutput]  # (rows, at, items, correct, times)


class LoadedRows(NamedTuple):
    rows: np.ndarray  # one schema-2 row per student
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
        return bool(header["model_version"].rstrip(b"\0") == self.layout.version_bytes and len(blob) > self.layout.size)

    def rows(self, students: Sequence[str], blobs: Sequence[bytes | None], vocab_ids_of: Mapping[str, list[str] | None], step: Step) -> LoadedRows:
        """One row per student: bulk where a blob is this model's row, one by one where it is not.

        ``vocab_ids_of``: the vocabulary of each version ``versions_to_read`` named (None:
        not in Redis; such a state is rebuilt from the initial state, its window dropped).
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
        stale: list[tuple[int, Window]] = []  # (row, window) to rebuild
        for i in others:
            blob = blobs[i]
            assert blob is not None
            header = read_header(blob)
            if header is not None and self.has_tail(blob, header):
                rows[i] = np.frombuffer(blob[: self.layout.size], self.layout.dtype)[0]  # this model's row, with a tail
                extras[i] = extra_ids(blob, header)
                continue
            try:
                state = self.readable(blob, students[i], vocab_ids_of)
            except StreamError as exc:
                unreadable.append((i, str(exc)))
                continue
            rows[i]["events"], rows[i]["updated_ms"] = state.events_applied, state.updated_ms
            for slot, (source, offset) in enumerate(list(state.offsets.items())[-SOURCES:][::-1]):
                rows[i]["src_hash"][slot] = int(source[1:], 16) if source.startswith("#") else source_hash(source)
                rows[i]["src_offset"][slot] = offset
            if state.model_version == self.layout.model_version and all(state.model_state.get(k) is not None for k in self.initial_rows):
                for k in self.initial_rows:  # a schema-1 state of this model: carried over as it is
                    rows[i][f"state.{k}"] = state.model_state[k]
                if state.mastery is not None:
                    rows[i]["mastery"] = state.mastery
                self.set_window(rows, i, state.window, extras)
            else:
                stale.append((i, state.window))
        if stale:
            self.rebuild(rows, stale, extras, step)
        return LoadedRows(rows, extras, unreadable, len(stale))

    def readable(self, blob: bytes, student: str, vocab_ids_of: Mapping[str, list[str] | None]) -> StudentState:
        """A state of another model version or schema as a ``StudentState`` whose window names its items."""
        header = read_header(blob)
        if header is None:
            return decode_state(blob, student)  # schema 1 (or a StreamError: unreadable)
        version = header["model_version"].rstrip(b"\0").decode(errors="replace")
        ids = vocab_ids_of.get(version)
        state = decode_state(blob, student, ids)
        if ids is None:
            log.warning("student %s: state of model %s, whose vocabulary is not in Redis: rebuilt from the initial state, its window dropped", student, version)
            state.window = []
        return state

    def set_window(self, rows: np.ndarray, row: int, window: Window, extras: dict[int, list[str]]) -> None:
        """Row ``row``'s window from (item id, correct, ts), oldest first: ids this vocabulary lacks keep their
        place as index V + k, the k-th of the row's ``extras`` (nothing of the window is lost)."""
        capacity = rows["win_item"].shape[1]
        kept = window[-capacity:]
        rows["window_len"][row], rows["window_head"][row] = len(kept), len(kept) % capacity
        foreign: list[str] = []
        indexes = []
        for item, _, _ in kept:
            index = self.index_of.get(item)
            if index is None:
                if item not in foreign:
                    foreign.append(item)
                index = self.num_items + foreign.index(item)
            indexes.append(index)
        if foreign:
            extras[row] = foreign
        if kept:
            rows["win_item"][row, : len(kept)] = indexes
            rows["win_correct"][row, : len(kept)] = [c for _, c, _ in kept]
            rows["win_ts"][row, : len(kept)] = [t for _, _, t in kept]

    def rebuild(self, rows: np.ndarray, stale: list[tuple[int, Window]], extras: dict[int, list[str]], step: Step) -> None:
        """Re-run this model over each stale state's window from the initial state: another model version.

        ``events`` and the offsets are kept; window ids this vocabulary does not know are
        not fed to the model (``window_steps``, the rule ``inspect --plot`` follows too).
        """
        plans = []
        for row, window in stale:
            log.info("student row %d: state rebuilt with %s from its %d-event window", row, self.layout.model_version, len(window))
            plans.append((row, window_steps(window, self.vocab.index)))
            self.set_window(rows, row, window, extras)
        for t in range(max((len(steps) for _, steps in plans), default=0)):  # position t of every window is one round
            live = [(row, steps[t]) for row, steps in plans if len(steps) > t]
            at = np.asarray([row for row, _ in live], np.int64)
            step(rows, at, np.asarray([s.item_index for _, s in live], np.int64), np.asarray([s.correct for _, s in live], np.int64), np.asarray([s.times for _, s in live], np.float32))


def still_held(rows: np.ndarray, row: int, num_items: int) -> bool:
    """Does row ``row``'s window still hold an id this vocabulary lacks (so its tail must be written)?"""
    return bool((rows["win_item"][row, : int(rows["window_len"][row])] >= num_items).any())
