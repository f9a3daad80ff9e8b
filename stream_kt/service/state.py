"""A student's streaming state: one msgpack blob under one Redis key.  Pure.

Fields (``schema_version`` 1):
    student_id      str
    model_version   the checkpoint version that produced ``model_state`` and ``mastery``
    events_applied  int, the student's ``seq`` after the last applied event
    window          the last ``WINDOW`` interactions, oldest first, as (raw item id, correct, ts_ms);
                    stored column-wise as [[ids...], [corrects...], [ts_ms...]] (raw ids, not
                    indices: a new model may have another vocabulary)
    model_state     {name: float32 bytes} per-student rows of the model's state (DKT: h, c)
    state_shapes    {name: shape} of those rows
    mastery         float32 bytes, P(correct) per vocabulary item after the last event
    offsets         {"topic/partition": last applied offset}: an event at or below it was
                    applied already (a replay after a crash) and is skipped
    updated_ms      wall clock of the last write
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack
import numpy as np

from stream_kt.data.sequences import interaction_times
from stream_kt.service.exceptions import StreamError

SCHEMA_VERSION = 1
WINDOW = 100


@dataclass(frozen=True)
class WindowStep:
    """One stored interaction as the model takes it."""

    position: int  # in the window
    item_index: int
    correct: int
    times: tuple[float, float]  # [elapsed, lag] seconds: the window keeps no elapsed time (0); lag from the timestamps


def window_steps(window: list[tuple[str, int, int]], item_index: Callable[[str], int | None]) -> list[WindowStep]:
    """The model's inputs over a stored window, for the interactions this vocabulary knows.

    The one rule that rebuilding a state for a new model (``processor.rebuild``) and
    recomputing mastery for ``inspect --plot`` share: ids the vocabulary does not know
    are dropped (the processor never applied them), lags run between the kept events.
    """
    kept = [(position, index, correct, ts) for position, (item, correct, ts) in enumerate(window) if (index := item_index(item)) is not None]
    times = interaction_times([ts for *_, ts in kept], None)
    pairs = times.tolist() if times is not None else []
    return [WindowStep(position, index, correct, (pair[0], pair[1])) for (position, index, correct, _), pair in zip(kept, pairs)]


@dataclass
class StudentState:
    student_id: str
    model_version: str
    events_applied: int = 0
    window: list[tuple[str, int, int]] = field(default_factory=list)
    model_state: dict[str, np.ndarray] = field(default_factory=dict)
    mastery: np.ndarray | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    updated_ms: int = 0

    def already_applied(self, source: str, offset: int) -> bool:
        """True when the event at ``offset`` of ``source`` ("topic/partition") was applied before."""
        last = self.offsets.get(source)
        return last is not None and offset <= last

    def record(self, item_id: str, correct: int, ts_ms: int, source: str, offset: int) -> None:
        """Append an applied interaction to the window and remember its offset."""
        self.events_applied += 1
        self.window.append((item_id, correct, ts_ms))
        del self.window[:-WINDOW]
        self.offsets[source] = offset

    def to_bytes(self) -> bytes:
        packed: bytes = msgpack.packb(
            {
                "schema_version": SCHEMA_VERSION,
                "student_id": self.student_id,
                "model_version": self.model_version,
                "events_applied": self.events_applied,
                # columnar: three flat arrays pack and unpack in msgpack's C code, no per-entry Python work
                "window": [list(column) for column in zip(*self.window)] if self.window else [[], [], []],
                "model_state": {k: np.ascontiguousarray(v, np.float32).tobytes() for k, v in self.model_state.items()},
                "state_shapes": {k: list(v.shape) for k, v in self.model_state.items()},
                "mastery": None if self.mastery is None else np.ascontiguousarray(self.mastery, np.float32).tobytes(),
                "offsets": self.offsets,
                "updated_ms": self.updated_ms,
            }
        )
        return packed

    @classmethod
    def from_bytes(cls, raw: bytes) -> StudentState:
        try:
            data = msgpack.unpackb(raw, raw=False)
            version = data.get("schema_version")
        except Exception as exc:
            raise StreamError(f"stored student state is not msgpack ({type(exc).__name__})") from None
        if version != SCHEMA_VERSION:
            raise StreamError(f"student state schema_version {version!r}, this stream-kt reads {SCHEMA_VERSION}")
        shapes = data["state_shapes"]
        return cls(
            student_id=data["student_id"],
            model_version=data["model_version"],
            events_applied=data["events_applied"],
            window=list(zip(*data["window"])),
            model_state={k: np.frombuffer(v, np.float32).reshape(shapes[k]).copy() for k, v in data["model_state"].items()},
            mastery=None if data["mastery"] is None else np.frombuffer(data["mastery"], np.float32).copy(),
            offsets=dict(data["offsets"]),
            updated_ms=data["updated_ms"],
        )
