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


def lag_seconds(previous_ts_ms: int | None, ts_ms: int) -> float:
    """Seconds since the previous interaction: 0 for a first one, never negative."""
    return 0.0 if previous_ts_ms is None else max(ts_ms - previous_ts_ms, 0) / 1000.0


def interaction_times(ts_ms: Sequence[int] | None, elapsed_ms: Sequence[int] | None) -> np.ndarray | None:
    """(n, 2) float32 [elapsed, lag] seconds per interaction (a missing one is 0); None when neither is known.

    The same rule the stream applies to each event (``elapsed_ms`` field, ``ts`` against
    the previous applied event's), so time-aware models score offline what they serve.
    """
    if ts_ms is None and elapsed_ms is None:
        return None
    n = len(ts_ms if ts_ms is not None else elapsed_ms)  # type: ignore[arg-type]
    times = np.zeros((n, 2), np.float32)
    if elapsed_ms is not None:
        times[:, 0] = np.maximum(np.asarray(elapsed_ms, np.float64), 0) / 1000.0
    if ts_ms is not None:
        times[:, 1] = [lag_seconds(ts_ms[k - 1] if k else None, ts_ms[k]) for k in range(n)]
    return times
