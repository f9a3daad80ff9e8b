"""Micro-batching: which events of one poll share one model step, and the batch's arrays.  Pure.

A model step applies one interaction to each row, so one student may appear at most
once per step.  A poll's events are split into rounds: round k holds every student's
k-th event of the poll (``round_index``), so each student's events are applied in the
order they were produced (a student's events share a partition, which Kafka keeps in
order) while different students share a step.  The functions after it update a
batch's state rows (``state.StateLayout``) in place, a whole round at a time:
no Python per event.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream_kt.data.sequences import times_s
from stream_kt.service.state import NO_SKILL


def codes_of(students: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(each event's student code, the distinct students in first-appearance order): codes index the students."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(s, len(index)) for s in students), np.int64, len(students))
    return codes, list(index)


def round_index(codes: np.ndarray) -> np.ndarray:
    """Each event's round: how many events of its student come before it in the poll."""
    n = len(codes)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    lengths = np.diff(np.r_[starts, n])
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, lengths)
    return rank


def applied_before(
    src_hash: np.ndarray, src_offset: np.ndarray, sources: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Which events a student's stored state has applied already (a replay): its offset is at or below the
    state's last applied offset for the event's source.  ``src_hash``/``src_offset`` are the events'
    students' source slots, (n, slots); ``sources`` the events' source hashes, (n,)."""
    stored = np.where(src_hash == sources[:, None], src_offset, -1).max(1) if len(offsets) else np.zeros(0, np.int64)
    return offsets <= stored


def record_sources(rows: np.ndarray, at: np.ndarray, sources: np.ndarray, offsets: np.ndarray) -> None:
    """Remember that rows ``at`` (distinct) applied these (source, offset)s: update the source's slot, or
    make a new source the newest slot (the oldest of a full set drops out)."""
    slot_hash, slot_offset = rows["src_hash"], rows["src_offset"]
    match = slot_hash[at] == sources[:, None]  # (n, slots)
    known = match.any(1)
    if known.any():
        slot_offset[at[known], match[known].argmax(1)] = offsets[known]
    fresh = at[~known]
    if len(fresh):
        slot_hash[fresh, 1:] = slot_hash[fresh, :-1]
        slot_offset[fresh, 1:] = slot_offset[fresh, :-1]
        slot_hash[fresh, 0] = sources[~known]
        slot_offset[fresh, 0] = offsets[~known]


def push_window(
    rows: np.ndarray,
    at: np.ndarray,
    items: np.ndarray,
    correct: np.ndarray,
    ts: np.ndarray,
    questions: np.ndarray | None = None,
) -> None:
    """Append one interaction to each of rows ``at`` (distinct): the window is a ring of its capacity.

    ``items`` (n,), or (n, K) skill sets padded with V (stored as ``state.NO_SKILL``);
    ``questions`` (n,) where the rows' window holds questions."""
    capacity = rows["win_item"].shape[1]
    head = rows["window_head"][at].astype(np.int64)
    if items.ndim == 2:
        items = np.where(items >= rows["mastery"].shape[1], NO_SKILL, items)
    rows["win_item"][at, head] = items
    if questions is not None:
        rows["win_question"][at, head] = questions
    rows["win_correct"][at, head] = correct
    rows["win_ts"][at, head] = ts
    rows["window_head"][at] = (head + 1) % capacity
    rows["window_len"][at] = np.minimum(rows["window_len"][at].astype(np.int64) + 1, capacity)


def event_times(rows: np.ndarray, at: np.ndarray, ts: np.ndarray, elapsed_ms: np.ndarray) -> np.ndarray:
    """(n, 2) float32 [elapsed, lag] seconds of events on rows ``at`` (``data.sequences.times_s``, the rule
    offline data follows): elapsed from the event (-1: unknown), lag since the row's newest window interaction."""
    capacity = rows["win_item"].shape[1]
    previous = rows["win_ts"][at, (rows["window_head"][at].astype(np.int64) - 1) % capacity]
    return times_s(elapsed_ms, ts, previous, rows["window_len"][at] > 0)
