"""Skill sets and question ids through the readers, the writers and the vocabulary."""

import numpy as np
import pytest

from stream_kt.data.readers import WRITERS, read_dataset, skill_set_id
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.synthetic import SyntheticConfig, generate, question_skills
from stream_kt.data.vocab import Vocabulary
from stream_kt.errors import DataError
from stream_kt.training.prepare import detect_format

STUDENTS = [
    StudentSequence(
        "a",
        ("10_23", "23", "7"),
        (1, 0, 1),
        ts_ms=(1000, 2000, 3000),
        elapsed_ms=(5, 6, 7),
        questions=("q1", "q2", "q3"),
    ),
    StudentSequence("b", ("7", "10_23"), (0, 1), ts_ms=(1500, 2500), elapsed_ms=(8, 9), questions=("q3", "q1")),
]


@pytest.mark.parametrize("fmt", ["csv", "pykt", "assistments"])
def test_skill_sets_and_questions_survive_a_write_and_a_read(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    WRITERS[fmt](STUDENTS, path)
    assert detect_format(path) == fmt
    students, _ = read_dataset(path, fmt)
    by_id = {s.student_id: s for s in students}
    for original in STUDENTS:
        read = by_id[original.student_id]
        assert (read.items, read.correct, read.questions, read.elapsed_ms) == (
            original.items,
            original.correct,
            original.questions,
            original.elapsed_ms,
        )


def test_pykt_reads_na_and_checks_lengths(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("u1,3\nNA\n5,5_9,9\n1,0,1\nNA\nNA\n")
    (student,), _ = read_dataset(path, "pykt")
    assert (student.student_id, student.items, student.correct, student.questions, student.ts_ms) == (
        "u1",
        ("5", "5_9", "9"),
        (1, 0, 1),
        None,
        None,
    )
    path.write_text("u1,3\nNA\n5,5_9\n1,0,1\nNA\nNA\n")
    with pytest.raises(DataError, match=r"data.txt:3: 2 concepts for a sequence of 3"):
        read_dataset(path, "pykt")


def test_a_csv_skill_list_may_use_semicolons():
    assert skill_set_id(" 23;10 ;10") == "10_23"
    assert skill_set_id(" 10_23 ") == "10_23"


def test_vocabulary_modes():
    combined = Vocabulary.build(STUDENTS, "skill_id")
    sets = Vocabulary.build(STUDENTS, "skill_id", skills="sets", questions=True)
    first = Vocabulary.build(STUDENTS, "skill_id", skills="first")
    assert combined.ids == ("7", "23", "10_23") and combined.encode(STUDENTS[0]).items.tolist() == [2, 1, 0]
    assert first.ids == ("7", "10", "23") and first.encode(STUDENTS[0]).items.tolist() == [1, 2, 0]  # "10_23" is "10"
    assert sets.ids == ("7", "10", "23") and sets.max_skills == 2
    encoded = sets.encode(STUDENTS[0])
    assert encoded.items.tolist() == [[1, 2], [2, 3], [0, 3]]  # padded with V = 3
    assert encoded.questions.tolist() == [1, 2, 3]
    assert sets.question_skills == {"q1": "10_23", "q2": "23", "q3": "7"}
    unseen = StudentSequence("c", ("10_99", "99"), (1, 1), questions=("q9", "q1"))
    encoded = sets.encode(unseen)
    assert (
        encoded.items.tolist() == [[1, 3]] and encoded.questions.tolist() == [0] and encoded.n_unknown == 1
    )  # 99 is unknown; q9 unseen


def test_vocabulary_round_trips_through_json(tmp_path):
    sets = Vocabulary.build(STUDENTS, "skill_id", skills="sets", questions=True)
    sets.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert (loaded.ids, loaded.skills, loaded.max_skills, loaded.questions, loaded.question_skills) == (
        sets.ids,
        "sets",
        2,
        sets.questions,
        sets.question_skills,
    )


def test_questions_need_question_ids():
    with pytest.raises(DataError, match="have no question ids"):
        Vocabulary.build([StudentSequence("a", ("1",), (1,))], "skill_id", questions=True)


def test_synthetic_questions_follow_their_known_skill_map():
    config = SyntheticConfig(students=30, items=40, concepts=8, max_skills=4, question_spread=1.0)
    students = generate(config)
    known = question_skills(config)
    sizes = {len(skills) for skills in known.values()}
    assert sizes == {1, 2, 3, 4}
    for student in students:
        for item, question in zip(student.items, student.questions):
            assert item.split("_") == known[question]
    assert generate(config)[3] == students[3]  # the seed reproduces it
    assert np.mean([c for s in students for c in s.correct]) > 0.2
