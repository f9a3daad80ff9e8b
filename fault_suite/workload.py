"""What the suite sends and what it expects back: students, poison, the send plan, the reference run.

Everything here is pure and seeded: the same seed gives the same bytes in the same
order.  Valid events vary their encoding the ways the wire format allows (``skill_id``
as an integer, ``correct`` as a bool, ``item_id`` for ``skill_id``, no ``v``), and
some go back in time (``ts`` below the student's previous one): those are valid and
must be applied in offset order like any other.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import torch

from stream_kt.checkpoint import Checkpoint, save_checkpoint
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.split import Split
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import Vocabulary
from stream_kt.models import build_model
from stream_kt.service.events import (
    ELAPSED_MAX_MS,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    MAX_SKILL_IDS,
    TS_MAX_MS,
    decode_answer,
)
from stream_kt.service.exceptions import InvalidEvent
from stream_kt.tools.replay import event_order

from .fuzz import fuzz_message

ITEMS = 16  # skill ids "0".."15"
VOCAB = Vocabulary("skill_id", tuple(str(i) for i in range(ITEMS)))
MODEL_OPTIONS = {"num_items": ITEMS, "embed_dim": 16, "hidden_size": 32, "num_layers": 1, "dropout": 0.0}


def make_checkpoint(out_dir: Path, seed: int) -> Path:
    """A randomly initialised small DKT: the suite checks the plumbing, not the model's accuracy."""
    torch.manual_seed(seed)
    model = build_model("dkt", **MODEL_OPTIONS)
    save_checkpoint(
        out_dir,
        model,
        VOCAB,
        Split((), (), (), seed, "fault suite"),
        {"seed": seed, "note": "random init, fault suite"},
    )
    return out_dir


def students(count: int, events_per_student: int, seed: int, out_of_order_rate: float) -> list[StudentSequence]:
    """Synthetic students; ``out_of_order_rate`` of the events carry a ts earlier than the one before."""
    length = max(2, events_per_student)
    config = SyntheticConfig(
        students=count,
        items=ITEMS,
        concepts=4,
        min_length=max(1, length * 3 // 4),
        max_length=length * 5 // 4,
        seed=seed,
    )
    rng = random.Random(seed)
    out = []
    for s in generate(config):
        stamps = list(s.ts_ms or ())
        for i in range(1, len(stamps)):
            if rng.random() < out_of_order_rate:
                stamps[i] = stamps[i - 1] - rng.randint(1, 3_600_000)  # up to an hour back
        out.append(StudentSequence(f"fs{seed}-{s.student_id.split(':')[1]}", s.items, s.correct, ts_ms=tuple(stamps)))
    return out


def out_of_order_count(sequences: list[StudentSequence]) -> int:
    return sum(sum(b < a for a, b in zip(s.ts_ms, s.ts_ms[1:])) for s in sequences if s.ts_ms)


# ---------------------------------------------------------------- poison

Builder = Callable[[random.Random, str], bytes | None]


def _event(rng: random.Random, student: str) -> dict:
    return {
        "v": 1,
        "student_id": student,
        "skill_id": str(rng.randrange(ITEMS)),
        "correct": rng.randint(0, 1),
        "ts": 1_700_000_000_000 + rng.randrange(10**9),
    }


def _with(rng: random.Random, student: str, **changes: object) -> bytes:
    event = _event(rng, student)
    event.update(changes)
    return msgpack.packb(event)


def _without(rng: random.Random, student: str) -> bytes:
    event = _event(rng, student)
    del event[rng.choice(["student_id", "skill_id", "correct", "ts"])]
    return msgpack.packb(event)


def _huge(rng: random.Random, student: str) -> bytes:
    size = rng.choice(
        [MAX_EVENT_BYTES + 1, rng.randint(MAX_EVENT_BYTES, 64 * 1024), rng.randint(64 * 1024, 256 * 1024)]
    )
    event = _event(rng, student)
    event["pad"] = rng.randbytes(size)
    return msgpack.packb(event)


GIANT_BYTES = 5_000_000  # bigger than any dead-letter topic takes: its dead letter is a truncated prefix


def _giant(rng: random.Random, student: str) -> bytes:
    event = _event(rng, student)
    event["pad"] = b""
    base = len(msgpack.packb(event))
    event["pad"] = rng.randbytes(GIANT_BYTES - base - 4)  # bin 32: 5-byte header instead of the empty bin's 2
    return msgpack.packb(event)


OUT_OF_RANGE = (  # well-typed values outside the documented ranges (events.py)
    {"ts": 2**64 - 1}, {"ts": -1}, {"ts": TS_MAX_MS + 1}, {"ts": -(2**63)},
    {"elapsed_ms": 2**64 - 1}, {"elapsed_ms": ELAPSED_MAX_MS + 1}, {"event_id": "e" * (MAX_ID_CHARS + 1)},
)  # fmt: skip

BAD_SKILL_LISTS = (
    [],
    None,
    "1_2",
    [1, 1],
    ["1", 1],
    [1.5],
    [""],
    ["1_2"],
    [[1]],
    list(range(MAX_SKILL_IDS + 1)),
)  # skill_ids refused (events.py)


def _bad_skills(rng: random.Random, student: str) -> bytes:
    event = _event(rng, student)
    if rng.random() < 0.2:
        event["skill_ids"] = [event["skill_id"]]  # a good list, but skill_id too
    else:
        del event["skill_id"]
        event["skill_ids"] = rng.choice(BAD_SKILL_LISTS)
    return msgpack.packb(event)


# kind -> (expected DLQ reason, builder): each kind's reason holds by construction
POISON: dict[str, tuple[str, Builder]] = {
    "random_bytes": (
        "not_msgpack",
        lambda rng, s: b"\xc1" + rng.randbytes(rng.randint(0, 200)),
    ),  # 0xc1 is never valid msgpack
    "empty": ("not_msgpack", lambda rng, s: b""),
    "tombstone": ("not_msgpack", lambda rng, s: None),
    "truncated": ("not_msgpack", lambda rng, s: (raw := msgpack.packb(_event(rng, s)))[: rng.randint(1, len(raw) - 1)]),
    "trailing_bytes": ("not_msgpack", lambda rng, s: msgpack.packb(_event(rng, s)) + rng.randbytes(rng.randint(1, 8))),
    "not_a_map": (
        "not_a_map",
        lambda rng, s: msgpack.packb(rng.choice([[s, "1", 1, 2], 42, "answer", None, 1.5, b"\x00"])),
    ),
    "bad_version": ("bad_version", lambda rng, s: _with(rng, s, v=rng.choice([0, 2, "1", None]))),
    "missing_field": ("missing_field", _without),
    "bad_student": ("bad_type", lambda rng, s: _with(rng, s, student_id=rng.choice([1.5, None, "", [s], True]))),
    "bad_skill": ("bad_type", lambda rng, s: _with(rng, s, skill_id=rng.choice([1.0, None, ["1"], {"id": 1}, False]))),
    "bad_ts": ("bad_type", lambda rng, s: _with(rng, s, ts=rng.choice(["2024-01-01", 1.7e12, None, True]))),
    "bad_event_id": ("bad_type", lambda rng, s: _with(rng, s, event_id=rng.choice([1.5, [1], {"a": 1}]))),
    "out_of_range": ("out_of_range", lambda rng, s: _with(rng, s, **rng.choice(OUT_OF_RANGE))),
    "bad_skill_list": ("bad_skills", _bad_skills),
    "bad_correct": ("bad_correct", lambda rng, s: _with(rng, s, correct=rng.choice([2, -1, "1", 0.0, 1.0, None]))),
    "unknown_skill": (
        "unknown_item",
        lambda rng, s: _with(
            rng, s, skill_id=rng.choice([f"no-such-skill-{rng.randrange(1000)}", ITEMS + rng.randrange(1000), ""])
        ),
    ),
    "huge": ("oversized", _huge),
    "giant": ("oversized", _giant),
}


def poison(kind: str, rng: random.Random, student: str) -> tuple[bytes | None, str]:
    """(message bytes, the reason its dead letter must carry)."""
    reason, build = POISON[kind]
    return build(rng, student), reason


# ---------------------------------------------------------------- the send plan


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes | None
    kind: str  # "valid", a POISON kind, or "fuzz"
    student_id: str | None = None  # valid, and fuzz that decodes: whose answer
    position: int | None = None  # valid: index in the student's sequence (its output has seq position + 1)
    reason: str | None = None  # poison, and fuzz that does not decode: the expected dead-letter reason
    event_id: object = None  # fuzz that decodes: the event id its output echoes

    @property
    def valid(self) -> bool:
        return self.kind == "valid"


def encode_valid(rng: random.Random, student: StudentSequence, position: int) -> bytes:
    """One valid answer, in one of the encodings the format admits."""
    event: dict = {
        "v": 1,
        "student_id": student.student_id,
        "skill_id": student.items[position],
        "correct": student.correct[position],
    }
    event["ts"] = student.ts_ms[position] if student.ts_ms else position
    event["event_id"] = f"{student.student_id}#{position}"
    variant = rng.random()
    if variant < 0.1:
        event["skill_id"] = int(event["skill_id"])
    elif variant < 0.2:
        event["correct"] = bool(event["correct"])
    elif variant < 0.3:
        event["item_id"] = event.pop("skill_id")
    elif variant < 0.4:
        del event["v"]
    return msgpack.packb(event)


def fuzzed(rng: random.Random, n: int, seed: int) -> Message:
    """The n-th fuzzed message (``fuzz.fuzz_message``), with what the decoder makes of it: an answer of a
    student of its own (one output, seq 1) or a dead letter with its reason."""
    value = fuzz_message(rng, n, VOCAB.ids)
    key = f"fuzz{seed}-{n}".encode()
    try:
        event = decode_answer(value, VOCAB.index)
    except InvalidEvent as exc:
        return Message(key, value, "fuzz", reason=exc.reason)
    return Message(key, value, "fuzz", student_id=event.student_id, event_id=event.event_id)


def plan(sequences: list[StudentSequence], seed: int, poison_rate: float, fuzz_rate: float = 0.0) -> list[Message]:
    """Every student's events in order, students interleaved, poison and fuzz mixed in; each
    poison kind at least once."""
    rng = random.Random(seed)
    fuzz_rng = random.Random(f"fuzz-{seed}")
    kinds: list[str] = []
    messages = []
    for index, position in event_order(sequences, seed):
        student = sequences[index]
        key = student.student_id.encode()
        if rng.random() < fuzz_rate:
            messages.append(fuzzed(fuzz_rng, len(messages), seed))
        if rng.random() < poison_rate:
            if not kinds:
                kinds = rng.sample(list(POISON), len(POISON))  # every kind in turn, in a shuffled order
            kind = kinds.pop()
            value, reason = poison(kind, rng, student.student_id)
            poison_key = rng.choices([key, f"stranger-{rng.randrange(10**6)}".encode(), None], weights=[7, 2, 1])[0]
            if value is None:
                poison_key = poison_key or key  # a record needs a key or a value
            messages.append(Message(poison_key, value, kind, reason=reason))
        messages.append(Message(key, encode_valid(rng, student, position), "valid", student.student_id, position))
    for kind in POISON:  # a short run may not have drawn every kind: the rest go at random places
        if not any(m.kind == kind for m in messages):
            value, reason = poison(kind, rng, sequences[0].student_id)
            messages.insert(
                rng.randrange(len(messages) + 1), Message(sequences[0].student_id.encode(), value, kind, reason=reason)
            )
    return messages


# ---------------------------------------------------------------- the reference


@dataclass
class Reference:
    """One student's uninterrupted run: the model stepped over its whole sequence, offline."""

    p_correct: np.ndarray  # (n,) before each answer
    mastery: np.ndarray  # (n, V) after each answer
    state: dict[str, np.ndarray] = field(default_factory=dict)  # final (L, H) rows


@torch.no_grad()
def reference(checkpoint: Checkpoint, sequences: list[StudentSequence]) -> dict[str, Reference]:
    """Step every student at once, position by position (students that ran out drop from the batch)."""
    model, vocab = checkpoint.model.eval(), checkpoint.vocab
    longest = max(len(s) for s in sequences)
    items = torch.tensor(
        [[vocab.index(s.items[t]) if t < len(s) else 0 for t in range(longest)] for s in sequences]
    )  # (S, T)
    correct = torch.tensor([[s.correct[t] if t < len(s) else 0 for t in range(longest)] for s in sequences])  # (S, T)
    lengths = torch.tensor([len(s) for s in sequences])
    state = model.initial_state(len(sequences))  # each (S, L, H)
    p_correct = torch.zeros(len(sequences), longest)
    mastery = torch.zeros(len(sequences), longest, len(vocab))
    for t in range(longest):
        live = torch.nonzero(lengths > t).squeeze(1)  # (S_t,)
        out = model.step({k: v[live] for k, v in state.items()}, items[live, t], correct[live, t])
        for k, v in out.state.items():
            state[k][live] = v
        p_correct[live, t] = out.p_correct
        mastery[live, t] = out.mastery
    return {
        s.student_id: Reference(
            p_correct[i, : len(s)].numpy(), mastery[i, : len(s)].numpy(), {k: v[i].numpy() for k, v in state.items()}
        )
        for i, s in enumerate(sequences)
    }
