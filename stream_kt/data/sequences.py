"""The domain record of the offline half: one student's answers in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SKILL_SEPARATOR = "_"  # joins the skills of one answer in a raw item id, as pyKT and the ASSISTments reader write them


def id_sort_key(value: str) -> tuple[int, int | str]:
    """Integer ids in numeric order, then the others in text order: how vocabularies and skill sets sort ids."""
    return (0, int(value)) if value.lstrip("-").isdigit() else (1, value)


def join_skills(ids: list[str]) -> str:
    """The raw item id of a skill set: its ids sorted (``id_sort_key``) and joined, ``["23", "10"]`` -> ``"10_23"``."""
    return SKILL_SEPARATOR.join(sorted(ids, key=id_sort_key))


def skills_of(item: str) -> list[str]:
    """The skill ids of a raw item id: ``"10_23"`` -> ``["10", "23"]``, ``"7"`` -> ``["7"]``."""
    return [part for part in item.split(SKILL_SEPARATOR) if part]


@dataclass(frozen=True)
class StudentSequence:
    """One student's interactions, oldest first.

    ``items`` are raw ids as strings (skill or problem ids exactly as the source
    spells them); the vocabulary maps them to model indices.  An answer to a question
    with several skills has them joined by ``SKILL_SEPARATOR`` (``"10_23"``): one
    answer, one position, whatever the vocabulary makes of the set.  ``questions``
    holds each answer's question id ("" where unknown), where the source has them;
    ``ts_ms`` and ``elapsed_ms`` likewise.
    """

    student_id: str
    items: tuple[str, ...]
    correct: tuple[int, ...]
    ts_ms: tuple[int, ...] | None = None
    elapsed_ms: tuple[int, ...] | None = None
    questions: tuple[str, ...] | None = None
    item_names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.items) != len(self.correct):
            raise ValueError(f"student {self.student_id}: {len(self.items)} items but {len(self.correct)} responses")
        if self.questions is not None and len(self.questions) != len(self.items):
            raise ValueError(
                f"student {self.student_id}: {len(self.items)} items but {len(self.questions)} question ids"
            )

    def __len__(self) -> int:
        return len(self.items)


def times_s(
    elapsed_ms: np.ndarray, ts_ms: np.ndarray, previous_ts_ms: np.ndarray, has_previous: np.ndarray
) -> np.ndarray:
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
