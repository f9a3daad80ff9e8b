"""Answer events with a question's skill set (``skill_ids``) or only its ``question_id``."""

from __future__ import annotations

import msgpack
import pytest

from stream_kt.service.events import MAX_SKILL_IDS, answer_fields, decode_answer
from stream_kt.service.exceptions import InvalidEvent

INDEX = {"7": 0, "10_23": 1, "23": 2}  # a combined vocabulary: the set 10+23 is an entry of its own
QUESTIONS = {"q1": "10_23", "q3": "7"}


def event(**fields: object) -> bytes:
    packed: bytes = msgpack.packb({"student_id": "s1", "correct": 1, "ts": 1_700_000_000_000, **fields})
    return packed


@pytest.mark.parametrize(
    ("fields", "item_id", "index"),
    [
        ({"skill_ids": [23, "10"]}, "10_23", 1),  # any order, any id type: the set's entry
        ({"skill_ids": ["7"]}, "7", 0),
        (
            {"skill_ids": [10, 23], "question_id": "q9"},
            "10_23",
            1,
        ),  # the event's skills win; an unknown question is fine
        ({"question_id": "q1"}, "10_23", 1),  # the checkpoint's map gives its skills
        ({"question_id": "q3", "skill_id": 23}, "23", 2),  # skill_id as before, question beside it
    ],
)
def test_skill_sets_and_questions_map_to_the_vocabulary(fields, item_id, index):
    raw = event(**fields)
    for decoded in (
        answer_fields(raw, INDEX, question_skills=QUESTIONS),
        decode_answer(raw, INDEX.get, question_skills=QUESTIONS),
    ):
        assert ((decoded[1], decoded[2]) if isinstance(decoded, tuple) else (decoded.item_id, decoded.item_index)) == (
            item_id,
            index,
        )


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        ({"skill_ids": []}, "bad_skills", "skill_ids must be a non-empty list of ids, got []"),
        ({"skill_ids": "10_23"}, "bad_skills", "skill_ids must be a non-empty list of ids, got '10_23'"),
        ({"skill_ids": [10, 10]}, "bad_skills", "skill_ids must be distinct single ids (no '_'), got [10, 10]"),
        ({"skill_ids": ["10_23"]}, "bad_skills", "skill_ids must be distinct single ids (no '_'), got ['10_23']"),
        (
            {"skill_ids": [10, 1.5]},
            "bad_skills",
            "every skill id must be a non-empty string or an integer, got [10, 1.5]",
        ),
        (
            {"skill_ids": [10, " "]},
            "bad_skills",
            "every skill id must be a non-empty string or an integer, got [10, ' ']",
        ),
        (
            {"skill_ids": list(range(MAX_SKILL_IDS + 1))},
            "bad_skills",
            f"skill_ids lists {MAX_SKILL_IDS + 1} skills, more than {MAX_SKILL_IDS}",
        ),
        ({"skill_ids": [10], "skill_id": 10}, "bad_skills", "give skill_id or skill_ids, not both"),
        ({"skill_ids": [7], "skill_id": 7}, "bad_skills", "give skill_id or skill_ids, not both"),
        ({"skill_ids": [10, 99]}, "unknown_item", "skill_ids '10_99' is not in the model's vocabulary"),
        (
            {"question_id": "q2"},
            "unknown_item",
            "question_id 'q2' names no skills and the model does not know the question",
        ),
        ({"question_id": 1.5}, "bad_type", "question_id must be a string or an integer"),
        ({"skill_id": 7, "question_id": [1]}, "bad_type", "question_id must be a string or an integer"),
        ({}, "missing_field", "item_id"),  # as before: skill_id, or its old name item_id
    ],
)
def test_bad_skill_lists_and_questions_are_refused_with_their_reason(fields, reason, detail):
    raw = event(**fields)
    for decode in (
        lambda: answer_fields(raw, INDEX, question_skills=QUESTIONS),
        lambda: decode_answer(raw, INDEX.get, question_skills=QUESTIONS),
    ):
        with pytest.raises(InvalidEvent) as caught:
            decode()
        assert (caught.value.reason, caught.value.detail) == (reason, detail)
