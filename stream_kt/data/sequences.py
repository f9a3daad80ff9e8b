"""The domain record of the offline half: one student's answers in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StudentSequence:
    """One student's interactions, oldest first.

    ``items`` are raw ids as strings (skill or problem ids exactly as the source
    spells them); the vocabulary maps them to model indices.  ``ts_ms`` and
    ``elapsed_ms`` are present only where the source has them.
    """

    student_id: str
    items: tuple[str, ...]
    correct: tuple[int, ...]
    ts_ms: tuple[int, ...] | None = None
    elapsed_ms: tuple[int, ...] | None = None
    item_names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.items) != len(self.correct):
            raise ValueError(f"student {self.student_id}: {len(self.items)} items but {len(self.correct)} responses")

    def __len__(self) -> int:
        return len(self.items)


def times_s(elapsed_ms: np.ndarray, ts_ms: np.ndarray, previous_ts_ms: np.ndarray, has_previous: np.ndarray) -> np.ndarray:
    """(n, 2) float32 [elapsed, lag] seconds of n interactions: elapsed as given (negative: unknown, 0), lag
    since the student's previous interaction (none: 0; a clock going back: 0).  The one rule for offline
    data (``interaction_times``) and the stream (``service.batcher.event_times``)."""
    lag = np.where(has_previous, np.maximum(ts_ms - previous_ts_ms, 0) / 1000.0, 0.0)
    elapsed = np.maximum(elapsed_ms, 0) / 1000.0
    return np.stack([elapsed, lag], 1).astype(np.float32)


def interaction_times(ts_ms: Sequence[int] | None, elapsed_ms: Sequence[int] | None) -> np.ndarray | None:
    """(n, 2) float32 [elapsed, lag] seconds per interaction of one student (a missing one is 0); None when
    neither is known.  The same rule the stream applies to each event (``times_s``), so time-aware models
    score offline what they serve.
    """
    if ts_ms is None and elapsed_ms is None:
        return None
    n = len(ts_ms if ts_ms is not None else elapsed_ms)  # type: ignore[arg-type]
    ts = np.asarray(ts_ms, np.float64) if ts_ms is not None else np.zeros(n)
    elapsed = np.asarray(elapsed_ms, np.float64) if elapsed_ms is not None else np.zeros(n)
    return times_s(elapsed, ts, np.r_[ts[:1], ts[:-1]], np.arange(n) > 0)
