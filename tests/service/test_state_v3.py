"""Schema 3: a window entry holds an answer's skill set and its question; schema-2 states upgrade on write."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_kt.data.vocab import Vocabulary
from stream_kt.service.batcher import push_window
from stream_kt.service.migration import Migration
from stream_kt.service.state import (
    HEADER,
    HEADER3,
    MAGIC_V2,
    NO_SKILL,
    SCHEMA_V2,
    StateLayout,
    decode_state,
    read_header,
    source_hash,
    window_of,
)

SHAPES = {"c": (1, 4), "h": (1, 4)}
INITIAL = {"c": np.full((1, 4), 0.5, np.float32), "h": np.zeros((1, 4), np.float32)}


def as_schema_2(blob: bytes) -> bytes:
    """A schema-3 row of one skill an answer and no questions, as schema 2 wrote it: the same row
    under the shorter header."""
    header = read_header(blob)
    assert header is not None and int(header["window_skills"]) == 1 and not int(header["window_questions"])
    old = np.zeros(1, HEADER)
    for name in HEADER.names or ():
        old[0][name] = header[name]
    shift = HEADER3.itemsize - HEADER.itemsize
    old[0]["magic"], old[0]["schema"], old[0]["header_bytes"] = MAGIC_V2, SCHEMA_V2, HEADER.itemsize
    old[0]["window_offset"] -= shift
    old[0]["mastery_offset"] -= shift
    return old.tobytes() + blob[HEADER3.itemsize :]


def test_a_window_of_skill_sets_and_questions_round_trips_and_reads_back_named():
    layout = StateLayout("dkt-sets", SHAPES, num_items=6, window=3, skills=3, questions=True)
    rows = layout.new(1, {k: v[None] for k, v in INITIAL.items()})
    for t, (skills, question, correct) in enumerate(
        [((1, 4, 6), 2, 1), ((0, 6, 6), 0, 0), ((5, 3, 2), 1, 1), ((2, 6, 6), 2, 0)]
    ):
        push_window(
            rows, np.array([0]), np.array([skills]), np.array([correct]), np.array([1000 * t]), np.array([question])
        )  # 6 = V: padding
    rows["events"] = 4
    blob = layout.to_blobs(rows)[0]
    assert len(blob) == layout.size and layout.is_mine(blob)
    header = read_header(blob)
    assert header is not None and (int(header["window_skills"]), int(header["window_questions"])) == (3, 1)
    window = window_of(blob, header)  # the last three, oldest first
    assert window.items.tolist() == [[0, NO_SKILL, NO_SKILL], [5, 3, 2], [2, NO_SKILL, NO_SKILL]]
    assert window.questions is not None and window.questions.tolist() == [0, 1, 2]
    state = decode_state(blob, "s", list("abcdef"), SHAPES, question_ids=["q1", "q2"])
    assert state.window == [
        ("a", 0, 1000),
        ("c_d_f", 1, 2000),
        ("c", 0, 3000),
    ]  # a set's raw id: its skills joined, sorted
    assert state.questions == ["", "q1", "q2"]


def test_a_schema_2_state_of_the_served_model_is_carried_over_and_written_as_schema_3():
    layout = StateLayout("dkt-v2", SHAPES, num_items=6, window=3)
    rows = layout.new(1, {k: v[None] for k, v in INITIAL.items()})
    rows["events"], rows["mastery"][0] = 5, np.linspace(0, 1, 6)
    rows["state.h"][0] = 0.25
    for t, item in enumerate([4, 1, 3]):
        push_window(rows, np.array([0]), np.array([item]), np.array([t % 2]), np.array([1000 * t]))
    rows["src_hash"][0, 0], rows["src_offset"][0, 0] = source_hash("answers/0"), 77
    current = layout.to_blobs(rows)[0]
    old = as_schema_2(current)
    assert old[:4] == b"KTS2" and len(old) == len(current) - 4 and not layout.is_mine(old)
    ids = list("abcdef")
    was, now = (
        decode_state(old, "s", ids, SHAPES, ["answers/0"]),
        decode_state(current, "s", ids, SHAPES, ["answers/0"]),
    )
    assert (
        (was.events_applied, was.window, was.offsets)
        == (now.events_applied, now.window, now.offsets)
        == (5, [("e", 0, 0), ("b", 1, 1000), ("d", 0, 2000)], {"answers/0": 77})
    )
    np.testing.assert_array_equal(was.mastery, now.mastery)
    np.testing.assert_array_equal(was.model_state["h"], now.model_state["h"])

    def never(*_):
        raise AssertionError("a state of the served model is carried over, not rebuilt")

    migration = Migration(layout, INITIAL, Vocabulary("skill_id", tuple(ids)))
    assert migration.versions_to_read([old]) <= {"dkt-v2"}
    loaded = migration.rows(["s"], [old], {}, never)
    assert loaded.rebuilt == 0 and not loaded.unreadable
    assert layout.to_blobs(loaded.rows)[0] == current  # the same state, byte for byte, now schema 3


def test_a_state_of_another_version_is_rebuilt_over_its_skill_sets_and_questions():
    """A served sets-and-questions model's window, read by a new version: each answer's skills
    and question reach its step."""
    old_layout = StateLayout("old", SHAPES, num_items=4, window=5, skills=2, questions=True)
    rows = old_layout.new(1, {k: v[None] for k, v in INITIAL.items()})
    for t, (skills, question) in enumerate([((0, 3), 1), ((2, 4), 2), ((1, 4), 0)]):  # V = 4 pads
        push_window(rows, np.array([0]), np.array([skills]), np.array([1]), np.array([1000 * t]), np.array([question]))
    rows["events"] = 3
    blob = old_layout.to_blobs(rows)[0]
    vocab = Vocabulary(
        "skill_id",
        ("10", "11", "12", "13", "14"),
        skills="sets",
        max_skills=2,
        questions=("qa", "qb"),
        question_skills={"qa": "10_13", "qb": "12"},
    )
    layout = StateLayout("new", SHAPES, num_items=5, window=5, skills=2, questions=True)
    seen = []

    def step(rows, at, items, correct, times, questions):
        seen.append((items.tolist(), questions.tolist()))
        from stream_kt.models import StepOutput

        return StepOutput(torch.zeros(len(at)), torch.zeros(len(at), 5), {})

    loaded = Migration(layout, INITIAL, vocab).rows(
        ["s"], [blob], {"old": ["10", "11", "12", "13"]}, step, {"old": ["qb", "qa"]}
    )
    assert loaded.rebuilt == 1
    # old indexes name skills 10 and 13, then 12 (its pad dropped), then 11; old question 1 is "qb" (index 2 now),
    # 2 is "qa" (1)
    assert seen == [([[0, 3]], [2]), ([[2, 5]], [1]), ([[1, 5]], [0])]
    assert decode_state(
        layout.to_blobs(loaded.rows)[0], "s", list(vocab.ids), question_ids=list(vocab.questions)
    ).window == [("10_13", 1, 0), ("12", 1, 1000), ("11", 1, 2000)]


@pytest.mark.parametrize("skills", [1, 4])
def test_the_header_says_how_wide_an_entry_is_and_a_wrong_width_is_unreadable(skills):
    layout = StateLayout("m", SHAPES, num_items=6, window=3, skills=skills)
    blob = bytearray(layout.to_blobs(layout.new(1, {k: v[None] for k, v in INITIAL.items()}))[0])
    assert read_header(bytes(blob)) is not None
    blob[HEADER3.fields["window_skills"][1]] = skills + 1  # type: ignore[index]
    assert read_header(bytes(blob)) is None
