"""Adversarial answer events: one seeded generator for the fuzz test and the fault suite's ``fuzz`` class.

``fuzz_message(rng, n, items)`` is the n-th message of a run: random bytes, a value
that is not a map, or an answer event with some of its fields replaced by values a
confused or hostile producer could send (integers at the edges of int32, int64 and
uint64, inf, nan and -0.0, bools where ints go, nested maps and lists, bytes, long
and unusual strings, extension types), extra fields, a field removed, or a key
written twice.  What the decoder makes of it is the oracle: each message must be
answered or dead-lettered with the decoder's reason, and its batch must commit.

A student id that can decode as valid is unique to its message (``fuzz-n`` or an edge
integer offset by n), so "answered" means one output, whatever the order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import msgpack

from stream_kt.service.events import ELAPSED_MAX_MS, MAX_ID_CHARS, TS_MAX_MS

FIELDS = ("v", "student_id", "skill_id", "item_id", "correct", "ts", "event_id", "elapsed_ms")
EDGE_INTS = (
    0, 1, -1, 2, 2**31 - 1, 2**31, -(2**31), 2**32, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64 - 1,
    TS_MAX_MS, TS_MAX_MS + 1, ELAPSED_MAX_MS, ELAPSED_MAX_MS + 1,
)  # fmt: skip
EDGE_FLOATS = (math.inf, -math.inf, math.nan, -0.0, 0.0, 1.0, 0.5, 1e308, 5e-324, 1.7e12)
EDGE_STRINGS = (
    "",
    " ",
    "0",
    "1",
    "\x00",
    "é",
    "日本",
    "😀",
    "\u202e1",
    "s" * MAX_ID_CHARS,
    "s" * (MAX_ID_CHARS + 1),
    "x" * 3000,
    "1e3",
    "true",
    "null",
)


def any_value(rng: random.Random, depth: int = 0) -> Any:
    """Anything msgpack carries, edge values first."""
    kind = rng.randrange(10 if depth < 3 else 8)
    if kind == 0:
        return rng.choice(EDGE_INTS)
    if kind == 1:
        return rng.randint(-(2**63), 2**64 - 1)
    if kind == 2:
        return rng.choice(EDGE_FLOATS)
    if kind == 3:
        return rng.choice((True, False, None))
    if kind == 4:
        return rng.choice(EDGE_STRINGS)
    if kind == 5:
        return "".join(
            chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000))))
            for _ in range(rng.randrange(12))
        )
    if kind == 6:
        return rng.randbytes(rng.randrange(40))
    if kind == 7:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(9)))
    if kind == 8:
        return [any_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice((*FIELDS, "pad", 1, -1)): any_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def unique_student(rng: random.Random, n: int) -> str | int:
    """A valid student id no other message of the run has."""
    return rng.choice((f"fuzz-{n}", 2**64 - 1 - n, -(2**63) + n, 2**63 + n, f"{n}-" + "é" * 40))


def invalid_student(rng: random.Random) -> Any:
    return rng.choice(
        (None, True, False, 1.5, math.nan, "", "s" * (MAX_ID_CHARS + 1), b"s", [1], {"id": 1}, msgpack.ExtType(1, b""))
    )


def answer(rng: random.Random, n: int, items: Sequence[str]) -> dict[str, Any]:
    """A valid answer of a unique student."""
    event: dict[str, Any] = {
        "v": 1,
        "student_id": unique_student(rng, n),
        "skill_id": rng.choice(items),
        "correct": rng.randint(0, 1),
        "ts": rng.randint(0, TS_MAX_MS),
    }
    if rng.random() < 0.5:
        event["event_id"] = rng.choice((f"fuzz#{n}", n, 2**64 - 1, -(2**63)))
    if rng.random() < 0.3:
        event["elapsed_ms"] = rng.randint(0, ELAPSED_MAX_MS)
    return event


def pack_pairs(pairs: list[tuple[Any, Any]]) -> bytes:
    """A msgpack map written pair by pair, so a key may come twice (the decoder keeps the last)."""
    packer = msgpack.Packer()
    return packer.pack_map_header(len(pairs)) + b"".join(packer.pack(k) + packer.pack(v) for k, v in pairs)


def fuzz_message(rng: random.Random, n: int, items: Sequence[str]) -> bytes | None:
    """The n-th fuzzed message of a run (None: a tombstone)."""
    roll = rng.random()
    if roll < 0.04:
        return rng.randbytes(rng.randrange(64))
    if roll < 0.05:
        return None
    if roll < 0.1:
        return msgpack.packb(any_value(rng))
    event = answer(rng, n, items)
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):  # about one valid event in six
        name = rng.choice(FIELDS)
        if name == "student_id":
            event[name] = invalid_student(rng) if rng.random() < 0.6 else unique_student(rng, n)
        else:
            event[name] = any_value(rng)
    if rng.random() < 0.1:
        del event[rng.choice(sorted(event))]
    for _ in range(rng.choice((0, 0, 0, 1, 2))):
        event[rng.choice(("pad", "extra", "", "skills", 7))] = any_value(rng)
    pairs = list(event.items())
    if rng.random() < 0.1:  # a duplicated key: the second value counts, so it must not make a student valid twice
        name = rng.choice([k for k in FIELDS if k != "student_id"])
        pairs.insert(rng.randrange(len(pairs) + 1), (name, any_value(rng)))
    if rng.random() < 0.5:
        return pack_pairs(pairs)
    return msgpack.packb(dict(pairs), use_bin_type=rng.random() < 0.9)
