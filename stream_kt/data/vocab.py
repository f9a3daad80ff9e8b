"""The modelled vocabulary: raw item ids <-> model indices.

Built from the training file's students and saved with the checkpoint, so the stream
maps ids exactly as training did.  An id the model has never seen has no index:
offline evaluation drops such interactions (they are neither input nor scored, and
their count is reported as ``n_unknown``); the stream sends such events to the
dead-letter topic with reason ``unknown_item``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream_kt.data.readers import _id_sort_key
from stream_kt.data.sequences import StudentSequence, interaction_times
from stream_kt.errors import CheckpointError


@dataclass(frozen=True)
class EncodedSequence:
    """A student's interactions as model indices (unknown items removed)."""

    student_id: str
    items: np.ndarray  # (n,) int64 indices into the vocabulary
    correct: np.ndarray  # (n,) int64 0/1
    n_unknown: int = 0
    times: np.ndarray | None = None  # (n, 2) float32 [elapsed, lag] seconds, where the source has them

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Vocabulary:
    item_column: str
    ids: tuple[str, ...]
    names: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {raw: i for i, raw in enumerate(self.ids)})

    @classmethod
    def build(cls, students: Iterable[StudentSequence], item_column: str, names: dict[str, str] | None = None) -> Vocabulary:
        seen = {item for s in students for item in s.items}
        ids = tuple(sorted(seen, key=_id_sort_key))
        return cls(item_column, ids, {k: v for k, v in (names or {}).items() if k in seen})

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, raw_id: object) -> int | None:
        """Model index of a raw id (int or str), or None when the model has never seen it."""
        return self._index.get(str(raw_id).strip())  # type: ignore[attr-defined]

    def name(self, index: int) -> str:
        raw = self.ids[index]
        return self.names.get(raw, raw)

    def encode(self, student: StudentSequence) -> EncodedSequence:
        indices = [self.index(item) for item in student.items]
        known = [k for k, index in enumerate(indices) if index is not None]
        keep = lambda column: None if column is None else [column[k] for k in known]  # noqa: E731
        return EncodedSequence(
            student.student_id,
            np.fromiter((indices[k] for k in known), dtype=np.int64, count=len(known)),
            np.fromiter((student.correct[k] for k in known), dtype=np.int64, count=len(known)),
            n_unknown=len(student.items) - len(known),
            # lags between the kept interactions: the stream never applies an unknown item either
            times=interaction_times(keep(student.ts_ms), keep(student.elapsed_ms)),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"item_column": self.item_column, "ids": list(self.ids), "names": self.names}))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            data = json.loads(path.read_text())
            return cls(data["item_column"], tuple(data["ids"]), data.get("names", {}))
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: not a stream-kt vocabulary ({exc})") from None
