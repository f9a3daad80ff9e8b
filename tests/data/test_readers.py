from pathlib import Path

import numpy as np
import pytest

from stream_kt.data.readers import item_names, read_dataset, write_3line, write_assistments, write_csv
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.errors import DataError

FIXTURES = Path(__file__).parent.parent / "fixtures"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "assist2009"


def test_3line_reads_students_in_order_with_positional_ids():
    students, report = read_dataset(FIXTURES / "small.3line", "3line")
    assert [s.student_id for s in students] == ["small:0", "small:1", "small:2"]
    assert students[0].items == ("1", "2", "3") and students[0].correct == (1, 0, 1)
    assert students[2].items == ("2", "2", "2", "7") and students[2].correct == (0, 1, 1, 1)
    assert report.students == 3 and report.interactions == 9


@pytest.mark.parametrize("name", ["skill_builder_small.csv", "skill_builder_small.csv.gz"])
def test_assistments_one_interaction_per_order_id_sorted_by_order_id(name):
    students, report = read_dataset(FIXTURES / name, "assistments", "skill_id")
    by_id = {s.student_id: s for s in students}
    first = by_id["64525"]
    # order_ids 33022500 < 33022537 < 33022709 < 33023000 (two skill rows -> one answer); the row without skill
    # is dropped
    assert first.items == ("10", "10", "10", "11_13")
    assert first.correct == (0, 1, 1, 0)
    assert first.elapsed_ms == (25390, 32454, 4922, 1000)
    assert by_id["70363"].items == ("10", "10") and by_id["70363"].correct == (0, 1)
    assert report.dropped == {"duplicate row of a multi-skill problem": 1, "no skill id": 1}


def test_assistments_problem_id_keeps_rows_without_skill_and_latin1_names():
    students, _ = read_dataset(FIXTURES / "skill_builder_small.csv", "assistments", "problem_id")
    first = {s.student_id: s for s in students}["64525"]
    assert first.items == ("51444", "51424", "51435", "51450", "51451")
    skill_students, _ = read_dataset(FIXTURES / "skill_builder_small.csv", "assistments", "skill_id")
    names = item_names(skill_students)
    assert names["11"] == "Équations"
    assert names["11_13"] == "Équations + Fractions"


@pytest.mark.parametrize(
    "content, fmt, message",
    [
        ("order_id,user_id,correct\n1,2,1\n", "assistments", "missing column(s) problem_id, skill_id"),
        ("", "3line", "no students"),
        ("3\n1,2\n1,0,1\n", "3line", "header says 3 answers but found 2 items"),
        ("x\n1\n1\n", "3line", "expected the number of answers"),
        ("2\n1,2\n1,5\n", "3line", "responses must be 0 or 1"),
        ("2\n1,2\n", "3line", "not a multiple of 3"),
        ("order_id,user_id,problem_id,skill_id,correct\n1,7,3,4,yes\n", "assistments", "must be numbers"),
        ("student_id,item_id,ts_ms\na,1,5\n", "csv", "missing column(s) correct"),
        ("student_id,item_id,correct\na,1,2\n", "csv", "bad.csv:2: correct must be 0 or 1"),
        ("student_id,item_id,correct,ts_ms\na,1,1,soon\n", "csv", "ts_ms must be a non-negative integer"),
        ("student_id,item_id,correct\n,1,1\n", "csv", "student_id and item_id must not be empty"),
        ("student_id,item_id,correct\n", "csv", "no students"),
    ],
)
def test_bad_files_raise_one_clear_data_error(tmp_path, content, fmt, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dataset(path, fmt)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="not a file"):
        read_dataset(tmp_path)


def test_write_3line_round_trips(tmp_path):
    students, _ = read_dataset(FIXTURES / "small.3line", "3line")
    write_3line(students, tmp_path / "copy.3line")
    again, _ = read_dataset(tmp_path / "copy.3line", "3line")
    assert [(s.items, s.correct) for s in again] == [(s.items, s.correct) for s in students]


def test_csv_keeps_file_order_per_student_and_times_where_every_answer_has_one(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        "student_id,item_id,correct,ts_ms,elapsed_ms\nb,9,1,300,\na,x_1,0,200,1500\nb,7,0,100,\na,x_1,1,,40\n"
    )
    students, report = read_dataset(path, "csv", item="problem_id")  # --item does not apply: item_id is the events' id
    assert [(s.student_id, s.items, s.correct, s.ts_ms, s.elapsed_ms) for s in students] == [
        ("b", ("9", "7"), (1, 0), (300, 100), None),  # file order, not ts order
        ("a", ("x_1", "x_1"), (0, 1), None, (1500, 40)),  # a missing ts: no times for the student
    ]
    assert (report.students, report.interactions) == (2, 4)


def test_write_csv_round_trips_items_answers_and_times(tmp_path):
    students = [
        StudentSequence("s 1", ("a", "b"), (1, 0), ts_ms=(5, 6), elapsed_ms=(0, 7)),
        StudentSequence("2", ("c",), (1,)),
    ]
    write_csv(students, tmp_path / "out.csv")
    again, _ = read_dataset(tmp_path / "out.csv", "csv")
    assert [(s.student_id, s.items, s.correct, s.ts_ms, s.elapsed_ms) for s in again] == [
        (s.student_id, s.items, s.correct, s.ts_ms, s.elapsed_ms) for s in students
    ]


def test_synthetic_students_round_trip_through_the_assistments_csv_with_their_response_times(tmp_path):
    students = generate(SyntheticConfig(students=30, seed=2))
    write_assistments(students, tmp_path / "synthetic.csv")
    again, report = read_dataset(tmp_path / "synthetic.csv", "assistments")
    assert not report.dropped
    by_id = {s.student_id: s for s in again}
    for s in students:
        assert (by_id[s.student_id].items, by_id[s.student_id].correct, by_id[s.student_id].elapsed_ms) == (
            s.items,
            s.correct,
            s.elapsed_ms,
        )


def test_synthetic_response_times_are_shorter_when_the_answer_is_likelier_right():
    timed = generate(SyntheticConfig(students=200, seed=3))
    flat = generate(SyntheticConfig(students=200, seed=3, time_signal=0.0))
    assert [(s.items, s.correct, s.ts_ms) for s in timed] == [
        (s.items, s.correct, s.ts_ms) for s in flat
    ]  # only the times differ

    def log_seconds_by_answer(students):
        seconds = np.log(np.concatenate([s.elapsed_ms for s in students]) / 1000)
        correct = np.concatenate([s.correct for s in students]).astype(bool)
        return seconds[correct].mean(), seconds[~correct].mean()

    right, wrong = log_seconds_by_answer(timed)
    assert wrong - right > 0.1  # right answers came from likelier-right moments: faster
    right, wrong = log_seconds_by_answer(flat)
    assert abs(wrong - right) < 0.03


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared ASSISTments 2009 data not present")
@pytest.mark.parametrize(
    "name, students, answers",
    [("skill_id_train.csv", 3373, 262652), ("skill_id_test.csv", 844, 65639), ("problem_id_train.csv", 3330, 268322)],
)
def test_real_assist2009_counts_match_source_md(name, students, answers):
    read, report = read_dataset(SHARED / name, "3line")
    assert report.students == students
    assert report.interactions == answers
