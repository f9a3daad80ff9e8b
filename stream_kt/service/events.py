"""Wire formats (msgpack).  Pure: no Kafka, no Redis.

Answer event (input topic, key = student id as UTF-8):
    {"v": 1, "student_id": str|int, "skill_id": str|int  (or "item_id"),
     "correct": 0|1|bool, "ts": int ms since epoch, "event_id": str|int (optional),
     "elapsed_ms": int >= 0 (optional: time spent answering; time-aware models use it),
     "question_id": str|int (optional), "skill_ids": [str|int, ...] (optional)}
    "v" is optional on input (absent means 1).  The skills answered: ``skill_id`` (one), or
    ``skill_ids`` (a question's set: 1 to MAX_SKILL_IDS distinct ids, not both; a bad list
    is ``bad_skills``), or neither when ``question_id`` names a question the checkpoint's
    question -> skills map knows (learnt from its training data; else ``unknown_item``).
    A set is the model's entry of its ids sorted and joined by ``_`` (``[23, 10]`` ->
    ``"10_23"``), as the training readers spell it.  Ranges (``out_of_range`` otherwise):
    ``ts`` in [0, TS_MAX_MS] (1970 to the end of year 9999; a future time is accepted),
    ``elapsed_ms`` in [0, ELAPSED_MAX_MS], string ids of 1..MAX_ID_CHARS characters
    (an integer id may be any integer msgpack carries).

Mastery message (output topic, key = student id as UTF-8), version 2 (the default):
    {"v": 2, "student_id": str, "seq": int, "event_id": ...|None, "ts": int,
     "model_version": str, "item_id": str, "p_correct": float,
     "mastery": bin (V little-endian float32, or float16), "dtype": "f4" | "f2"}
    Version 1 (``KT_MASTERY_FORMAT=v1``, for consumers that need it): the same map with
    "v": 1, "mastery" a list of V floats (float32 precision) and no "dtype".
    ``seq`` is the student's event count after applying this event: (student_id, seq)
    identifies an output, so a consumer drops duplicates (outputs may repeat after a
    crash).  ``mastery[i]`` is P(correct) on the vocabulary's i-th item, in the order
    of the checkpoint's ``vocab.json`` ("ids" and "names").  ``decode_mastery`` reads
    both versions.

Dead-letter message (DLQ topic): the original key and bytes unchanged; headers
``reason`` (a code from ``REASONS``), ``detail``, ``source`` ("topic/partition/offset").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import NoneType
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from stream_kt.data.sequences import SKILL_SEPARATOR, join_skills, skills_of
from stream_kt.service.exceptions import InvalidEvent
from stream_kt.settings import (
    MASTERY_DTYPES,
    MASTERY_FORMATS,
    MAX_EVENT_BYTES,
)  # the choices of KT_MASTERY_*, the default KT_MAX_EVENT_BYTES

if TYPE_CHECKING:
    from stream_kt.data.vocab import Vocabulary

Entry = int | tuple[int, ...]  # the model's input for an answer: an index, or a skill set's indices padded to K with V
ITEM_INDEX_CACHE = 1_000_000  # raw item ids whose entry an ``ItemIndex`` remembers


class ItemIndex(dict[str, Entry]):
    """Raw item id -> the model's input, for a vocabulary that is not one entry per answer (``--skills sets`` or
    ``first``): ``get`` computes ``Vocabulary.entry`` (a set padded to K with V) and remembers it."""

    def __init__(self, vocab: Vocabulary) -> None:
        super().__init__()
        self.vocab = vocab
        self.width = vocab.max_skills if vocab.skills == "sets" else 1
        self.padding = len(vocab)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            pass
        entry = self.vocab.entry(key)
        if entry is None:
            return default
        value: Entry = tuple(entry) + (self.padding,) * (self.width - len(entry)) if isinstance(entry, list) else entry
        if len(self) < ITEM_INDEX_CACHE:
            self[key] = value
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None


def index_for(vocab: Vocabulary) -> Mapping[str, Entry]:
    """What the decoder looks an event's raw item id up in: a plain dict for one entry an
    answer, else an ``ItemIndex``."""
    if vocab.skills == "combined":
        return {item: i for i, item in enumerate(vocab.ids)}
    return ItemIndex(vocab)


FORMAT_VERSION = 1
REASONS = (
    "oversized",
    "not_msgpack",
    "not_a_map",
    "bad_version",
    "missing_field",
    "bad_type",
    "bad_correct",
    "out_of_range",
    "bad_skills",
    "unknown_item",
)
PROCESSING_ERROR = "processing_error"  # not the event's form: an event the processor failed on twice (processor.py)

TS_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last ms a calendar date (and datetime) can name
ELAPSED_MAX_MS = 2**31 - 1  # about 24.8 days spent on one answer
MAX_ID_CHARS = 256  # student_id and event_id strings
MAX_SKILL_IDS = 16  # the most skills one event may list


@dataclass(frozen=True)
class AnswerEvent:
    student_id: str
    item_id: str  # raw id, as the vocabulary spells it
    item_index: Entry  # the model's input: an index, or a skill set's indices padded to K with V (``ItemIndex``)
    correct: int
    ts_ms: int
    event_id: str | int | None = None
    elapsed_ms: int | None = None
    question_id: str | None = None  # raw id, where the event names its question


def encode_answer(
    student_id: str | int,
    item_id: str | int,
    correct: int | bool,
    ts_ms: int,
    event_id: str | int | None = None,
    item_field: str = "skill_id",
    elapsed_ms: int | None = None,
    question_id: str | int | None = None,
) -> bytes:
    """An answer event.  A ``skill_id`` naming a set (``"10_23"``, as the training readers spell one) goes out as
    the ``skill_ids`` list it is; ``question_id`` where known."""
    event: dict[str, Any] = {"v": FORMAT_VERSION, "student_id": student_id, "correct": int(correct), "ts": int(ts_ms)}
    if item_field == "skill_id" and isinstance(item_id, str) and SKILL_SEPARATOR in item_id:
        event["skill_ids"] = skills_of(item_id)
    else:
        event[item_field] = item_id
    if event_id is not None:
        event["event_id"] = event_id
    if elapsed_ms is not None:
        event["elapsed_ms"] = int(elapsed_ms)
    if question_id is not None:
        event["question_id"] = question_id
    packed: bytes = msgpack.packb(event)
    return packed


# (student_id, item_id, item index, correct, ts_ms, event_id, elapsed_ms): a valid event's fields
Fields = tuple[str, str, Any, int, int, "str | int | None", "int | None", "str | None"]


def answer_fields(
    raw: bytes | None,
    index_of: Mapping[str, Entry],
    max_bytes: int = MAX_EVENT_BYTES,
    question_skills: dict[str, str] | None = None,
) -> Fields:
    """``decode_answer``'s fields as a tuple, with no object per event: the processor's hot path.

    The common valid event is accepted by a few type checks; anything else goes through
    ``decode_answer``, which accepts or refuses it with its reason: both paths accept
    exactly the same events with the same fields (``tests/service/test_events.py``).
    """
    if raw is not None and len(raw) <= max_bytes:
        try:
            event = _unpack(raw, raw=False, strict_map_key=False)
        except Exception:  # garbage: decode_answer says why
            event = None
        if (
            type(event) is dict
            and "skill_id" in event
            and "skill_ids" not in event
            and ("v" not in event or (type(event["v"]) is int and event["v"] == FORMAT_VERSION))
        ):
            student, item, correct, ts = (
                event.get("student_id"),
                event["skill_id"],
                event.get("correct"),
                event.get("ts"),
            )
            event_id, elapsed = event.get("event_id"), event.get("elapsed_ms")
            if (
                ((type(student) is str and 0 < len(student) <= MAX_ID_CHARS) or type(student) is int)
                and type(item) in (str, int)
                and (correct is True or correct is False or (type(correct) is int and correct in (0, 1)))
                and type(ts) is int
                and 0 <= ts <= TS_MAX_MS
                and (
                    event_id is None
                    or type(event_id) is int
                    or (type(event_id) is str and len(event_id) <= MAX_ID_CHARS)
                )
                and (elapsed is None or (type(elapsed) is int and 0 <= elapsed <= ELAPSED_MAX_MS))
                and type(event.get("question_id")) in (NoneType, str, int)
            ):
                item_id = str(item).strip()
                index = index_of.get(item_id)
                if index is not None:
                    question = event.get("question_id")
                    return (
                        str(student),
                        item_id,
                        index,
                        int(correct),
                        ts,
                        event_id,
                        elapsed,
                        None if question is None else str(question).strip(),
                    )
    event_ = decode_answer(raw, index_of.get, max_bytes, question_skills)  # raises InvalidEvent with the reason
    return (
        event_.student_id,
        event_.item_id,
        event_.item_index,
        event_.correct,
        event_.ts_ms,
        event_.event_id,
        event_.elapsed_ms,
        event_.question_id,
    )


_unpack = msgpack.unpackb


def decode_answer(
    raw: bytes | None,
    item_index: Callable[[str], Entry | None],
    max_bytes: int = MAX_EVENT_BYTES,
    question_skills: dict[str, str] | None = None,
) -> AnswerEvent:
    """Validate ``raw``; raise ``InvalidEvent`` with a reason code from ``REASONS``.

    ``question_skills``: the checkpoint's question id -> skill set (raw id), for events that name only their question.
    """
    if raw is None:
        raise InvalidEvent("not_msgpack", "empty message (tombstone)")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversized", f"{len(raw)} bytes > {max_bytes}")
    try:
        event = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InvalidEvent("not_msgpack", f"{type(exc).__name__}") from None
    if not isinstance(event, dict):
        raise InvalidEvent("not_a_map", f"got {type(event).__name__}")
    version = event.get("v", FORMAT_VERSION)
    if not _is_int(version) or version != FORMAT_VERSION:
        raise InvalidEvent("bad_version", f"v={_short(version)}, this processor reads v={FORMAT_VERSION}")
    item_key = "skill_id" if "skill_id" in event else "item_id"
    if "skill_ids" in event or (item_key not in event and "question_id" in event):
        item_key = "skill_ids"  # read below, once the fields every event has are checked
    for name in (
        ("student_id", "correct", "ts") if item_key == "skill_ids" else ("student_id", item_key, "correct", "ts")
    ):
        if name not in event:
            raise InvalidEvent("missing_field", name)
    student, correct, ts = event["student_id"], event["correct"], event["ts"]
    item = _skill_set(event, question_skills) if item_key == "skill_ids" else event[item_key]
    if not _is_id(student) or (isinstance(student, str) and not student):
        raise InvalidEvent("bad_type", "student_id must be a non-empty string or an integer")
    if not _is_id(item):
        raise InvalidEvent("bad_type", f"{item_key} must be a string or an integer")
    if not _is_int(ts):
        raise InvalidEvent("bad_type", "ts must be an integer (ms since epoch)")
    if correct not in (0, 1) or isinstance(correct, float):  # True/False pass: bool is 0/1
        raise InvalidEvent("bad_correct", f"correct must be 0 or 1, got {_short(correct)}")
    event_id = event.get("event_id")
    if event_id is not None and not _is_id(event_id):
        raise InvalidEvent("bad_type", "event_id must be a string or an integer")
    elapsed = event.get("elapsed_ms")
    if elapsed is not None and (not _is_int(elapsed) or elapsed < 0):
        raise InvalidEvent("bad_type", "elapsed_ms must be a non-negative integer (ms spent answering)")
    if isinstance(student, str) and len(student) > MAX_ID_CHARS:
        raise InvalidEvent("out_of_range", f"student_id has {len(student)} characters, more than {MAX_ID_CHARS}")
    if isinstance(event_id, str) and len(event_id) > MAX_ID_CHARS:
        raise InvalidEvent("out_of_range", f"event_id has {len(event_id)} characters, more than {MAX_ID_CHARS}")
    if not 0 <= ts <= TS_MAX_MS:
        raise InvalidEvent(
            "out_of_range", f"ts {ts} is outside [0, {TS_MAX_MS}] (ms since epoch, 1970 to the end of 9999)"
        )
    if elapsed is not None and elapsed > ELAPSED_MAX_MS:
        raise InvalidEvent("out_of_range", f"elapsed_ms {elapsed} is more than {ELAPSED_MAX_MS}")
    item_id = str(item).strip()  # the vocabulary's spelling: " 3" and "3" are one skill
    index = item_index(item_id)
    if index is None:
        raise InvalidEvent("unknown_item", f"{item_key} {_short(item)} is not in the model's vocabulary")
    question = event.get("question_id")
    if question is not None and not _is_id(question):
        raise InvalidEvent("bad_type", "question_id must be a string or an integer")
    return AnswerEvent(
        str(student),
        item_id,
        index,
        int(correct),
        ts,
        event_id,
        elapsed,
        None if question is None else str(question).strip(),
    )


def _skill_set(event: dict[Any, Any], question_skills: dict[str, str] | None) -> str:
    """The raw id of an event's ``skill_ids`` (sorted, ``_``-joined), or of its question's known skills."""
    if "skill_ids" in event:
        if "skill_id" in event or "item_id" in event:
            raise InvalidEvent("bad_skills", "give skill_id or skill_ids, not both")
        skills = event["skill_ids"]
        if not isinstance(skills, list) or not skills:
            raise InvalidEvent("bad_skills", f"skill_ids must be a non-empty list of ids, got {_short(skills)}")
        if len(skills) > MAX_SKILL_IDS:
            raise InvalidEvent("bad_skills", f"skill_ids lists {len(skills)} skills, more than {MAX_SKILL_IDS}")
        if not all(_is_id(skill) and str(skill).strip() for skill in skills):
            raise InvalidEvent(
                "bad_skills", f"every skill id must be a non-empty string or an integer, got {_short(skills)}"
            )
        ids = [str(skill).strip() for skill in skills]
        if len(set(ids)) != len(ids) or any(SKILL_SEPARATOR in i for i in ids):
            raise InvalidEvent(
                "bad_skills", f"skill_ids must be distinct single ids (no {SKILL_SEPARATOR!r}), got {_short(skills)}"
            )
        return join_skills(ids)
    question = event["question_id"]
    if not _is_id(question):
        raise InvalidEvent("bad_type", "question_id must be a string or an integer")
    known = (question_skills or {}).get(str(question).strip())
    if known is None:
        raise InvalidEvent(
            "unknown_item", f"question_id {_short(question)} names no skills and the model does not know the question"
        )
    return known


def _is_id(value: object) -> bool:
    return isinstance(value, str) or _is_int(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a detail quotes the event, never all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MasteryEncoder:
    """Mastery messages of a batch: ``encode`` one per applied event, ``format`` "v2" (packed
    floats) or "v1" (a list)."""

    def __init__(self, model_version: str, format: str = "v2", dtype: str = "float32") -> None:
        if format not in MASTERY_FORMATS:
            raise ValueError(f"mastery format {format!r}: choose {' or '.join(MASTERY_FORMATS)}")
        if dtype not in MASTERY_DTYPES or (format == "v1" and dtype != "float32"):
            raise ValueError(f"mastery dtype {dtype!r}: float32, or float16 with format v2")
        self.model_version, self.format, self.dtype = (
            model_version,
            format,
            np.dtype(dtype).newbyteorder("<").str,
        )  # "<f4", "<f2"
        self.packer = msgpack.Packer(use_single_float=True, autoreset=True)

    def encode(
        self,
        students: list[str],
        seqs: list[int],
        event_ids: list[Any],
        ts: list[int],
        item_ids: list[str],
        p_correct: list[float],
        mastery: np.ndarray,
    ) -> list[bytes]:
        """One message per event: parallel lists, and ``mastery`` (n, V) float32."""
        pack, version = self.packer.pack, self.model_version
        if self.format == "v1":
            rows: list[Any] = mastery.tolist()
            v = 1
        else:
            width = mastery.shape[1] * np.dtype(self.dtype).itemsize
            raw = np.ascontiguousarray(mastery, self.dtype).tobytes()
            rows = [raw[i : i + width] for i in range(0, len(raw), width)]
            v = 2
        short = self.dtype[1:]  # "f4" / "f2"
        out = []
        for student, seq, event_id, t, item_id, p, row in zip(students, seqs, event_ids, ts, item_ids, p_correct, rows):
            message = {
                "v": v,
                "student_id": student,
                "seq": seq,
                "event_id": event_id,
                "ts": t,
                "model_version": version,
                "item_id": item_id,
                "p_correct": p,
                "mastery": row,
            }
            if v == 2:
                message["dtype"] = short
            out.append(pack(message))
        return out


def decode_mastery(raw: bytes) -> dict[str, Any]:
    """A mastery message of either version, with ``mastery`` as a list of floats."""
    message: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    if message.get("v") == 2:
        dtype = {"f4": "<f4", "f2": "<f2"}[message.get("dtype", "f4")]
        message["mastery"] = np.frombuffer(message["mastery"], dtype).astype(np.float64).tolist()
    return message
