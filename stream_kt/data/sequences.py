"""The domain record of the offline half: one student's answers in order."""

from __future__ import annotations

from dataclasses import dataclass, field


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
