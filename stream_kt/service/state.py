"""A student's streaming state: one blob under one Redis key.  Pure.

Schema 3 (written now): a fixed binary row per model version (``StateLayout``), read and
written for a whole batch at once with numpy.  Layout, little-endian, packed:

    HEADER3       magic "KTS3", schema 3, header size, model version (32 bytes), events
                  applied (u64, at byte 40), updated_ms, the window's capacity, length and
                  head, the number of source slots, V, the window's and the mastery's byte
                  offsets, 4 source slots: hash of "topic/partition" (u64, 0: empty) and
                  the last applied offset (i64), newest first; then K, the skills an
                  answer's window entry holds, and 1 where the window holds question ids
    state.<name>  float32, the model's per-student state tensors, in name order (DKT: c, h)
    mastery       float32 (V,): P(correct) per vocabulary item after the last event
    win_item      uint32 (W, K): the window as a ring, each answer's skill indices in the
                  writer's vocabulary (K = 1: one entry an answer); unused slots NO_SKILL
    win_question  uint32 (W,), only where the model reads questions: the question's index
                  in the writer's question list (0: none, or one it did not know)
    win_correct   uint8 (W,)
    win_ts        int64 (W,): ms since epoch
    (tail)        ``extra_bytes`` of UTF-8 item ids joined by 0x1f: window entries whose
                  item the writer's vocabulary lacks have index V + k, the tail's k-th id
                  (only states carried across a model upgrade have one)

The window holds vocabulary indices: a state of another model version is read through
that version's vocabulary (and question list), which ``serve`` records in Redis
(``keys.model_vocab_key``).

Schema 2 (read, and rewritten as schema 3 on the student's next event): schema 3 for
K = 1 without questions, under magic "KTS2" and a header without the last two fields.

Schema 1 (read, and rewritten as schema 3 on the student's next event): a msgpack map.

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

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import numpy as np

from stream_kt.data.sequences import interaction_times, join_skills
from stream_kt.service.exceptions import StreamError

SCHEMA_V1 = 1
WINDOW = 100
NO_SKILL = 0xFFFF_FFFF  # an unused skill slot of a window entry (schema 3)


@dataclass(frozen=True)
class WindowStep:
    """One stored interaction as the model takes it."""

    position: int  # in the window
    item_index: int | tuple[int, ...]  # the model's input: an index, or a skill set padded to K with V
    correct: int
    times: tuple[float, float]  # [elapsed, lag] seconds: the window keeps no elapsed time (0); lag from the timestamps
    question: int = 0  # question index (0: none or unknown), for models that read questions


def window_steps(
    window: list[tuple[str, int, int]],
    item_index: Callable[[str], int | tuple[int, ...] | None],
    questions: Sequence[str] = (),
    question_index: Callable[[str], int] | None = None,
) -> list[WindowStep]:
    """The model's inputs over a stored window, for the interactions this vocabulary knows.

    The one rule that rebuilding a state for a new model (``processor.rebuild``) and
    recomputing mastery for ``inspect --plot`` share: ids the vocabulary does not know
    are dropped (the processor never applied them), lags run between the kept events.
    ``questions``: the window's question ids (parallel to it, "" for none), indexed by
    ``question_index`` for a model that reads them.
    """
    kept = [
        (position, index, correct, ts)
        for position, (item, correct, ts) in enumerate(window)
        if (index := item_index(item)) is not None
    ]
    times = interaction_times([ts for *_, ts in kept], None)
    pairs = times.tolist() if times is not None else []

    def question(position: int) -> int:
        return (
            question_index(questions[position])
            if question_index is not None and position < len(questions) and questions[position]
            else 0
        )

    return [
        WindowStep(position, index, correct, (pair[0], pair[1]), question(position))
        for (position, index, correct, _), pair in zip(kept, pairs)
    ]


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
    questions: list[str] = field(default_factory=list)  # each window entry's question id ("" none); empty: not recorded

    def record(self, item_id: str, correct: int, ts_ms: int, source: str, offset: int) -> None:
        """Append an applied interaction to the window and remember its offset."""
        self.events_applied += 1
        self.window.append((item_id, correct, ts_ms))
        del self.window[:-WINDOW]
        self.offsets[source] = offset

    def to_bytes(self) -> bytes:
        packed: bytes = msgpack.packb(
            {
                "schema_version": SCHEMA_V1,
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
        if version != SCHEMA_V1:
            raise StreamError(f"student state schema_version {version!r}, this stream-kt reads {SCHEMA_V1}")
        shapes = data["state_shapes"]
        return cls(
            student_id=data["student_id"],
            model_version=data["model_version"],
            events_applied=data["events_applied"],
            window=list(zip(*data["window"])),
            model_state={
                k: np.frombuffer(v, np.float32).reshape(shapes[k]).copy() for k, v in data["model_state"].items()
            },
            mastery=None if data["mastery"] is None else np.frombuffer(data["mastery"], np.float32).copy(),
            offsets=dict(data["offsets"]),
            updated_ms=data["updated_ms"],
        )


# ====================================================================== schemas 2 and 3: fixed binary rows

MAGIC_V2 = b"KTS2"
SCHEMA_V2 = 2
MAGIC = b"KTS3"
SCHEMA_V3 = 3
SOURCES = 4  # source slots: (hash of "topic/partition", last applied offset), newest first

# The header every schema-2 state starts with, whatever model wrote it: enough to read the
# counts, the offsets and the window of a state of another model version.  Schema 3 adds
# two fields at its end (``HEADER3``): every offset before them, byte 40 included, is the same.
HEADER = np.dtype(
    [
        ("magic", "S4"),
        ("schema", "<u2"),
        ("header_bytes", "<u2"),
        ("model_version", "S32"),
        (
            "events",
            "<u8",
        ),  # events applied: the student's seq after the last one (byte 40: the fencing script reads it)
        ("updated_ms", "<i8"),
        ("window_capacity", "<u2"),
        ("window_len", "<u2"),
        ("window_head", "<u2"),  # the ring slot the next interaction goes to
        ("sources", "<u2"),
        ("num_items", "<u4"),
        ("window_offset", "<u4"),  # byte offsets of the window and the mastery in the row
        ("mastery_offset", "<u4"),
        ("extra_bytes", "<u4"),  # the tail after the row: ids the writer's vocabulary lacks (see EXTRA_SEPARATOR)
        ("src_hash", "<u8", (SOURCES,)),
        ("src_offset", "<i8", (SOURCES,)),
    ]
)
HEADER3 = np.dtype(
    [
        *((name, spec[0]) for name, spec in (HEADER.fields or {}).items()),
        ("window_skills", "<u2"),
        ("window_questions", "<u2"),
    ]  # K; 1: the window holds question ids
)
HEADER_FIELDS: dict[str, tuple[np.dtype[Any], int]] = {
    name: (spec[0], spec[1]) for name, spec in (HEADER3.fields or {}).items()
}
EXTRA_SEPARATOR = b"\x1f"
EVENTS_BYTE = HEADER_FIELDS["events"][1]  # 40: where the fencing script reads a stored state's events


def source_hash(source: str) -> int:
    """The 64-bit name a source ("topic/partition") has in a state's offset slots (never 0: 0 is an empty slot)."""
    return int.from_bytes(hashlib.blake2b(source.encode(), digest_size=8).digest(), "little") or 1


class StateLayout:
    """The fixed binary row of one model version's students (schema 3), read and written as numpy views.

    A row is the ``HEADER3``, then the model's state tensors (float32, ``state.<name>``),
    the mastery (float32, V), and the window as a ring of fixed-width columns: each
    answer's skill indices in this model's vocabulary (uint32, (K,) where ``skills`` K > 1,
    unused slots ``NO_SKILL``), its question index where ``questions`` (uint32), correct
    (uint8) and timestamp (int64 ms).  Many students' rows are one contiguous array of
    this dtype: a batch is decoded with one ``np.frombuffer`` over the joined blobs and
    encoded with one ``tobytes``.
    """

    def __init__(
        self,
        model_version: str,
        state_shapes: dict[str, tuple[int, ...]],
        num_items: int,
        window: int = WINDOW,
        skills: int = 1,
        questions: bool = False,
    ) -> None:
        if len(model_version.encode()) > 32:
            raise StreamError(f"model version {model_version!r} is longer than a state's 32-byte field")
        self.model_version = model_version
        self.version_bytes = model_version.encode()
        self.state_names = sorted(state_shapes)
        self.num_items, self.window, self.skills, self.questions = num_items, window, skills, questions
        self.state_shapes = {name: tuple(state_shapes[name]) for name in self.state_names}
        fields: list[tuple[str, np.dtype[Any]]] = [(name, spec[0]) for name, spec in HEADER_FIELDS.items()]
        fields += [(f"state.{name}", np.dtype(("<f4", self.state_shapes[name]))) for name in self.state_names]
        fields += [
            ("mastery", np.dtype(("<f4", (num_items,)))),
            ("win_item", np.dtype(("<u4", (window, skills) if skills > 1 else (window,)))),
        ]
        fields += [("win_question", np.dtype(("<u4", (window,))))] if questions else []
        fields += [("win_correct", np.dtype(("u1", (window,)))), ("win_ts", np.dtype(("<i8", (window,))))]
        self.dtype = np.dtype(fields)  # packed: no alignment padding
        self.size = self.dtype.itemsize
        offsets = {name: spec[1] for name, spec in (self.dtype.fields or {}).items()}
        self.window_offset, self.mastery_offset = offsets["win_item"], offsets["mastery"]

    def new(self, count: int, initial_rows: dict[str, np.ndarray]) -> np.ndarray:
        """``count`` students with nothing applied: the model's initial state, an empty window."""
        rows = np.zeros(count, self.dtype)
        rows["magic"], rows["schema"], rows["header_bytes"], rows["model_version"] = (
            MAGIC,
            SCHEMA_V3,
            HEADER3.itemsize,
            self.version_bytes,
        )
        rows["window_capacity"], rows["sources"], rows["num_items"] = self.window, SOURCES, self.num_items
        rows["window_skills"], rows["window_questions"] = self.skills, int(self.questions)
        rows["window_offset"], rows["mastery_offset"] = self.window_offset, self.mastery_offset
        for name in self.state_names:
            rows[f"state.{name}"] = initial_rows[name]
        return rows

    def parse(self, blobs: list[bytes]) -> np.ndarray:
        """Rows of blobs that are all this layout's (check with ``is_mine``): one copy of the joined bytes."""
        if not blobs:
            return np.zeros(0, self.dtype)
        return np.frombuffer(b"".join(blobs), self.dtype).copy()  # a writable array of its own

    def is_mine(self, blob: bytes) -> bool:
        """A schema-3 row written for this model version, with no tail (the bulk path's kind)?"""
        return len(blob) == self.size and blob[:4] == MAGIC and blob[8:40].rstrip(b"\0") == self.version_bytes

    @staticmethod
    def to_blobs(rows: np.ndarray, extras: dict[int, list[str]] | None = None) -> list[bytes]:
        """One bytes object per row (slices of one ``tobytes``); rows with ``extras`` (row -> ids) get their tail."""
        if extras:
            for row, ids in extras.items():
                rows[row]["extra_bytes"] = len(EXTRA_SEPARATOR.join(i.encode() for i in ids))
        raw = rows.tobytes()
        size = rows.dtype.itemsize
        blobs = [raw[i : i + size] for i in range(0, len(raw), size)]
        for row, ids in (extras or {}).items():
            blobs[row] += EXTRA_SEPARATOR.join(i.encode() for i in ids)
        return blobs


def read_header(blob: bytes) -> np.void | None:
    """The header of a schema-2 or schema-3 state of any model version, as a ``HEADER3`` (schema 2: K = 1, no
    questions); None when ``blob`` is neither (or is cut short)."""
    magic = blob[:4]
    if magic == MAGIC_V2 and len(blob) >= HEADER.itemsize:
        old = np.frombuffer(blob[: HEADER.itemsize], HEADER)[0]
        header: np.void = np.zeros(1, HEADER3)[0]
        for name in HEADER.names or ():
            header[name] = old[name]
        header["window_skills"] = 1
        schema, size = SCHEMA_V2, HEADER.itemsize
    elif magic == MAGIC and len(blob) >= HEADER3.itemsize:
        header = np.frombuffer(blob[: HEADER3.itemsize], HEADER3)[0]
        schema, size = SCHEMA_V3, HEADER3.itemsize
    else:
        return None
    if (
        header["schema"] != schema
        or header["header_bytes"] != size
        or not 1 <= int(header["window_skills"])
        or int(header["window_questions"]) > 1
    ):
        return None
    capacity, end = int(header["window_capacity"]), len(blob) - int(header["extra_bytes"])
    entry_bytes = 4 * int(header["window_skills"]) + 4 * int(header["window_questions"]) + 1 + 8
    if (
        int(header["window_offset"]) + capacity * entry_bytes != end
        or int(header["mastery_offset"]) + 4 * int(header["num_items"]) > end
    ):
        return None
    return header


def extra_ids(blob: bytes, header: np.void) -> list[str]:
    """The tail of a schema-2 or 3 state: the ids its window holds that the writer's vocabulary lacks."""
    count = int(header["extra_bytes"])
    return [part.decode() for part in blob[len(blob) - count :].split(EXTRA_SEPARATOR)] if count else []


class StoredWindow(NamedTuple):
    """A stored window, oldest first, in its writer's vocabulary."""

    items: np.ndarray  # (n, K) skill indices, NO_SKILL in unused slots (K = 1: one entry an answer)
    correct: np.ndarray  # (n,)
    ts: np.ndarray  # (n,) ms
    questions: np.ndarray | None  # (n,) question indices (0: none), where the writer's model reads them


def window_of(blob: bytes, header: np.void) -> StoredWindow:
    """The window of a schema-2 or 3 state (``read_header``'s header)."""
    capacity, length, head = int(header["window_capacity"]), int(header["window_len"]), int(header["window_head"])
    skills, has_questions = int(header["window_skills"]), bool(header["window_questions"])
    start = int(header["window_offset"])
    items = np.frombuffer(blob, "<u4", capacity * skills, start).reshape(capacity, skills)
    start += 4 * capacity * skills
    questions = np.frombuffer(blob, "<u4", capacity, start) if has_questions else None
    start += 4 * capacity * has_questions
    correct = np.frombuffer(blob, "u1", capacity, start)
    ts = np.frombuffer(blob, "<i8", capacity, start + capacity)
    order = (np.arange(head - length, head) % capacity) if capacity else np.zeros(0, np.int64)
    return StoredWindow(
        items[order].astype(np.int64),
        correct[order].astype(np.int64),
        ts[order].copy(),
        None if questions is None else questions[order].astype(np.int64),
    )


def decode_state(
    blob: bytes,
    student_id: str,
    item_ids: Sequence[str] | None = None,
    state_shapes: dict[str, tuple[int, ...]] | None = None,
    sources: Iterable[str] = (),
    question_ids: Sequence[str] | None = None,
) -> StudentState:
    """Any stored state (schema 1, 2 or 3) as a ``StudentState``, for reading and showing (``inspect``, tests).

    For schemas 2 and 3: ``item_ids`` (its writer's vocabulary, in model order) names the
    window's items ("#<index>" without it; a skill set's are joined by "_", the raw id of
    a set); ``question_ids`` (its writer's question list) names its questions ("" for
    none or unknown); ``state_shapes`` (its writer's model) splits the model state into
    named tensors (one flat array without it); ``sources`` names the offset slots of those
    "topic/partition" sources (others show as "#<hash>").  ``StreamError`` if the blob is
    no schema.
    """
    if blob[:4] not in (MAGIC, MAGIC_V2):
        return StudentState.from_bytes(blob)
    header = read_header(blob)
    if header is None:
        raise StreamError(
            f"stored student state has the schema-{2 if blob[:4] == MAGIC_V2 else 3} mark but not its header"
        )
    window = window_of(blob, header)
    num_items, extras = int(header["num_items"]), extra_ids(blob, header)

    def name(index: int) -> str:
        if index >= num_items and index - num_items < len(extras):
            return extras[index - num_items]
        return item_ids[index] if item_ids is not None and 0 <= index < len(item_ids) else f"#{index}"

    def named(indexes: np.ndarray) -> str:
        return join_skills([name(int(i)) for i in indexes if int(i) != NO_SKILL])

    def question(index: int) -> str:
        return question_ids[index - 1] if question_ids is not None and 0 < index <= len(question_ids) else ""

    mastery = (
        np.frombuffer(blob, "<f4", num_items, int(header["mastery_offset"])).copy() if int(header["events"]) else None
    )
    header_bytes = int(header["header_bytes"])
    flat = np.frombuffer(blob, "<f4", (int(header["mastery_offset"]) - header_bytes) // 4, header_bytes)
    model_state: dict[str, np.ndarray] = {"flat": flat.copy()}
    if state_shapes is not None:
        model_state, start = {}, 0
        for key in sorted(state_shapes):
            count = int(np.prod(state_shapes[key]))
            model_state[key] = flat[start : start + count].reshape(state_shapes[key]).copy()
            start += count
    slots = {source_hash(source): source for source in sources}
    return StudentState(
        student_id=student_id,
        model_version=header["model_version"].rstrip(b"\0").decode(),
        events_applied=int(header["events"]),
        window=[(named(i), int(c), int(t)) for i, c, t in zip(window.items, window.correct, window.ts)],
        questions=[] if window.questions is None else [question(int(q)) for q in window.questions],
        model_state=model_state,
        mastery=mastery,
        offsets={
            slots.get(int(h), f"#{int(h):016x}"): int(o)
            for h, o in zip(header["src_hash"], header["src_offset"])
            if int(h)
        },
        updated_ms=int(header["updated_ms"]),
    )
