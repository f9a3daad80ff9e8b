"""Wire formats (msgpack), version 1.  Pure: no Kafka, no Redis.

Answer event (input topic, key = student id as UTF-8):
    {"v": 1, "student_id": str|int, "skill_id": str|int  (or "item_id"),
     "correct": 0|1|bool, "ts": int ms since epoch, "event_id": str|int (optional),
     "elapsed_ms": int >= 0 (optional: time spent answering; time-aware models use it)}
    "v" is optional on input (absent means 1).

Mastery message (output topic, key = student id as UTF-8):
    {"v": 1, "student_id": str, "seq": int, "event_id": ...|None, "ts": int,
     "model_version": str, "item_id": str, "p_correct": float, "mastery": [float, ...]}
    ``seq`` is the student's event count after applying this event: (student_id, seq)
    identifies an output, so a consumer drops duplicates (outputs may repeat after a
    crash).  ``mastery[i]`` is P(correct) on the vocabulary's i-th item, in the order
    of the checkpoint's ``vocab.json`` ("ids" and "names").

Dead-letter message (DLQ topic): the original key and bytes unchanged; headers
``reason`` (a code from ``REASONS``), ``detail``, ``source`` ("topic/partition/offset").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from stream_kt.service.exceptions import InvalidEvent
from stream_kt.settings import MAX_EVENT_BYTES  # the default limit (KT_MAX_EVENT_BYTES)

FORMAT_VERSION = 1
REASONS = ("oversized", "not_msgpack", "not_a_map", "bad_version", "missing_field", "bad_type", "bad_correct", "unknown_item")


@dataclass(frozen=True)
class AnswerEvent:
    student_id: str
    item_id: str  # raw id, as the vocabulary spells it
    item_index: int  # model index
    correct: int
    ts_ms: int
    event_id: str | int | None = None
    elapsed_ms: int | None = None


def encode_answer(
    student_id: str | int, item_id: str | int, correct: int | bool, ts_ms: int, event_id: str | int | None = None, item_field: str = "skill_id", elapsed_ms: int | None = None
) -> bytes:
    event: dict[str, Any] = {"v": FORMAT_VERSION, "student_id": student_id, item_field: item_id, "correct": int(correct), "ts": int(ts_ms)}
    if event_id is not None:
        event["event_id"] = event_id
    if elapsed_ms is not None:
        event["elapsed_ms"] = int(elapsed_ms)
    packed: bytes = msgpack.packb(event)
    return packed


def decode_answer(raw: bytes | None, item_index: Callable[[str], int | None], max_bytes: int = MAX_EVENT_BYTES) -> AnswerEvent:
    """Validate ``raw``; raise ``InvalidEvent`` with a reason code from ``REASONS``."""
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
    if version != FORMAT_VERSION:
        raise InvalidEvent("bad_version", f"v={version!r}, this processor reads v={FORMAT_VERSION}")
    item_key = "skill_id" if "skill_id" in event else "item_id"
    for name in ("student_id", item_key, "correct", "ts"):
        if name not in event:
            raise InvalidEvent("missing_field", name)
    student, item, correct, ts = event["student_id"], event[item_key], event["correct"], event["ts"]
    if not _is_id(student) or (isinstance(student, str) and not student):
        raise InvalidEvent("bad_type", "student_id must be a non-empty string or an integer")
    if not _is_id(item):
        raise InvalidEvent("bad_type", f"{item_key} must be a string or an integer")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise InvalidEvent("bad_type", "ts must be an integer (ms since epoch)")
    if correct not in (0, 1) or isinstance(correct, float):  # True/False pass: bool is 0/1
        raise InvalidEvent("bad_correct", f"correct must be 0 or 1, got {correct!r}")
    event_id = event.get("event_id")
    if event_id is not None and not _is_id(event_id):
        raise InvalidEvent("bad_type", "event_id must be a string or an integer")
    elapsed = event.get("elapsed_ms")
    if elapsed is not None and (isinstance(elapsed, bool) or not isinstance(elapsed, int) or elapsed < 0):
        raise InvalidEvent("bad_type", "elapsed_ms must be a non-negative integer (ms spent answering)")
    item_id = str(item).strip()  # the vocabulary's spelling: " 3" and "3" are one skill
    index = item_index(item_id)
    if index is None:
        raise InvalidEvent("unknown_item", f"{item_key} {item!r} is not in the model's vocabulary")
    return AnswerEvent(str(student), item_id, index, int(correct), ts, event_id, elapsed)


def _is_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def encode_mastery(event: AnswerEvent, seq: int, model_version: str, p_correct: float, mastery: list[float]) -> bytes:
    packed: bytes = msgpack.packb(
        {
            "v": FORMAT_VERSION,
            "student_id": event.student_id,
            "seq": seq,
            "event_id": event.event_id,
            "ts": event.ts_ms,
            "model_version": model_version,
            "item_id": event.item_id,
            "p_correct": float(p_correct),
            "mastery": mastery,
        },
        use_single_float=True,  # float32 is the model's precision; halves the message
    )
    return packed


def decode_mastery(raw: bytes) -> dict[str, Any]:
    message: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    return message
