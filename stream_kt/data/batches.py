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


# one student's rows for ``make_batch``: (items, correct) or (items, correct, times (n, 2) or None)
Row = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass
class Batch:
    items: torch.Tensor  # (B, T) int64, input item at t
    correct: torch.Tensor  # (B, T) int64, input response at t
    mask: torch.Tensor  # (B, T) bool, t is a real interaction
    next_items: torch.Tensor  # (B, T) int64, item answered at t+1
    next_correct: torch.Tensor  # (B, T) float32, response at t+1 (the label)
    next_mask: torch.Tensor  # (B, T) bool, t and t+1 are both real: a scored prediction
    # (B, T, 2) float32 [elapsed, lag] seconds of the interaction at t (0 where unknown);
    # None when no row has times.  Only time-aware models (``KTModel.uses_times``) read it.
    times: torch.Tensor | None = None

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
                out.append(Window(seq.student_id, items, correct, None if seq.times is None else seq.times[start : start + window], start))
    return out


def make_batch(rows: Sequence[Row], pad: PadSide = "post", length: int | None = None) -> Batch:
    """Pad ``(items, correct[, times])`` rows into one next-step batch of width ``length`` (default: longest row)."""
    width = max(len(row[0]) for row in rows) if length is None else length
    size = (len(rows), width)
    items = np.zeros(size, np.int64)
    correct = np.zeros(size, np.int64)
    mask = np.zeros(size, bool)
    next_items = np.zeros(size, np.int64)
    next_correct = np.zeros(size, np.float32)
    next_mask = np.zeros(size, bool)
    timed = [row[2] if len(row) > 2 else None for row in rows]
    times = np.zeros((*size, 2), np.float32) if any(t is not None for t in timed) else None
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
    t = torch.from_numpy
    return Batch(t(items), t(correct), t(mask), t(next_items), t(next_correct), t(next_mask), times=None if times is None else t(times))


def batch_indices(n: int, batch_size: int, shuffle: bool, seed: int = 0) -> Iterator[np.ndarray]:
    """Indices of ``n`` windows, ``batch_size`` at a time: in order, or in a permutation seeded by ``seed``."""
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def iterate_batches(windows: Sequence[Window], batch_size: int, shuffle: bool, seed: int = 0, pad: PadSide = "post") -> Iterator[Batch]:
    for index in batch_indices(len(windows), batch_size, shuffle, seed):
        chunk = [windows[i] for i in index]
        yield make_batch([(w.items, w.correct, w.times) for w in chunk], pad=pad)
