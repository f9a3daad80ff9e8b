"""Windows and padded next-step batches.

The "predict t+1 from steps up to t" structure lives here, not in the models: a
batch carries the inputs (``items``, ``correct``, ``mask``) and, position by position,
the NEXT interaction of the same student (``next_items``, ``next_correct``) with
``next_mask`` marking the positions that have a next interaction to score.  A model
reads only the inputs up to t when it predicts ``next_correct[t]``; the tests in
``tests/models/test_leakage.py`` fail if it does not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from stream_kt.data.vocab import EncodedSequence

PadSide = Literal["post", "pre"]


@dataclass(frozen=True)
class Window:
    """A slice of one student's sequence (training only)."""

    student_id: str
    items: np.ndarray
    correct: np.ndarray
    times: np.ndarray | None = None  # (n, 2) [elapsed, lag] seconds, where the data has them
    start: int = 0  # position of the window's first interaction in the student's sequence
    questions: np.ndarray | None = None  # (n,) question indices (0: none), where the vocabulary has questions


# one student's rows for ``make_batch``: (items, correct[, times (n, 2) or None[, questions (n,) or None]]);
# items are (n,) indices, or (n, K) skill sets padded with V
Row = (
    tuple[np.ndarray, np.ndarray]
    | tuple[np.ndarray, np.ndarray, np.ndarray | None]
    | tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]
)


def row_of(sequence: EncodedSequence | Window) -> Row:
    """A sequence's or window's row for ``make_batch``: everything a model may read."""
    return sequence.items, sequence.correct, sequence.times, sequence.questions


@dataclass
class Batch:
    items: torch.Tensor  # (B, T) int64, input item at t; (B, T, K) skill sets padded with V ("sets" vocabularies)
    correct: torch.Tensor  # (B, T) int64, input response at t
    mask: torch.Tensor  # (B, T) bool, t is a real interaction
    next_items: torch.Tensor  # (B, T) or (B, T, K) int64, item answered at t+1
    next_correct: torch.Tensor  # (B, T) float32, response at t+1 (the label)
    next_mask: torch.Tensor  # (B, T) bool, t and t+1 are both real: a scored prediction
    # (B, T, 2) float32 [elapsed, lag] seconds of the interaction at t (0 where unknown);
    # None when no row has times.  Only time-aware models (``KTModel.uses_times``) read it.
    times: torch.Tensor | None = None
    # (B, T) int64 question index of the interaction at t and at t+1 (0: none or unseen); None when the
    # vocabulary has no questions.  Only question-aware models (``KTModel.uses_questions``) read them.
    questions: torch.Tensor | None = None
    next_questions: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        moved = {f: None if (v := getattr(self, f)) is None else v.to(device) for f in self.__dataclass_fields__}
        return Batch(**moved)  # type: ignore[arg-type]  # only times may be None, and stays None


def cut_windows(sequences: Sequence[EncodedSequence], window: int) -> list[Window]:
    """Cut each sequence into consecutive windows of at most ``window`` interactions.

    Long sequences are cut, not truncated (every answer is used for training).
    Windows shorter than 2 have nothing to score and are dropped.
    """
    if window < 2:
        raise ValueError("window must be at least 2")
    out = []
    for seq in sequences:
        for start in range(0, len(seq), window):
            items, correct = seq.items[start : start + window], seq.correct[start : start + window]
            if len(items) >= 2:
                cut = slice(start, start + window)
                times = None if seq.times is None else seq.times[cut]
                out.append(
                    Window(
                        seq.student_id,
                        items,
                        correct,
                        times,
                        start,
                        None if seq.questions is None else seq.questions[cut],
                    )
                )
    return out


def make_batch(rows: Sequence[Row], pad: PadSide = "post", length: int | None = None) -> Batch:
    """Pad ``(items, correct[, times[, questions]])`` rows into one next-step batch of width ``length``
    (default: longest row).

    Skill-set rows ((n, K) items) pad with skill rows of index 0: padding is masked, never read.
    """
    width = max(len(row[0]) for row in rows) if length is None else length
    size = (len(rows), width)
    item_size = size + tuple(np.shape(rows[0][0])[1:])  # (B, T) or (B, T, K)
    items = np.zeros(item_size, np.int64)
    correct = np.zeros(size, np.int64)
    mask = np.zeros(size, bool)
    next_items = np.zeros(item_size, np.int64)
    next_correct = np.zeros(size, np.float32)
    next_mask = np.zeros(size, bool)
    timed = [row[2] if len(row) > 2 else None for row in rows]
    times = np.zeros((*size, 2), np.float32) if any(t is not None for t in timed) else None
    asked: list[np.ndarray | None] = [row[3] if len(row) > 3 else None for row in rows]
    questions = np.zeros(size, np.int64) if any(q is not None for q in asked) else None
    next_questions = None if questions is None else np.zeros(size, np.int64)
    for row, (seq_items, seq_correct, *_) in enumerate(rows):
        n = len(seq_items)
        if n > width:
            raise ValueError(f"row of length {n} does not fit width {width}")
        start = 0 if pad == "post" else width - n
        span = slice(start, start + n)
        items[row, span], correct[row, span], mask[row, span] = seq_items, seq_correct, True
        if times is not None and timed[row] is not None:
            times[row, span] = timed[row]
        # the shift happens inside the row's real span, so it is the same on either padding side
        scored = slice(start, start + n - 1)
        next_items[row, scored] = seq_items[1:]
        next_correct[row, scored] = seq_correct[1:]
        next_mask[row, scored] = True
        asked_row = asked[row]
        if questions is not None and next_questions is not None and asked_row is not None:
            questions[row, span] = asked_row
            next_questions[row, scored] = asked_row[1:]
    t = torch.from_numpy
    optional = lambda x: None if x is None else t(x)  # noqa: E731
    return Batch(
        t(items),
        t(correct),
        t(mask),
        t(next_items),
        t(next_correct),
        t(next_mask),
        times=optional(times),
        questions=optional(questions),
        next_questions=optional(next_questions),
    )


def batch_indices(n: int, batch_size: int, shuffle: bool, seed: int = 0) -> Iterator[np.ndarray]:
    """Indices of ``n`` windows, ``batch_size`` at a time: in order, or in a permutation seeded by ``seed``."""
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def iterate_batches(
    windows: Sequence[Window], batch_size: int, shuffle: bool, seed: int = 0, pad: PadSide = "post"
) -> Iterator[Batch]:
    for index in batch_indices(len(windows), batch_size, shuffle, seed):
        chunk = [windows[i] for i in index]
        yield make_batch([row_of(w) for w in chunk], pad=pad)
