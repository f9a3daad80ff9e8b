"""``stream-kt audit``: planted multi-skill repeats are found, clean files pass, and each
check counts what it claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream_kt.cli import main
from stream_kt.data.audit import RepeatRule, audit, repeat_signature
from stream_kt.data.readers import read_dataset

FIXTURES = Path(__file__).parent.parent / "fixtures"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_3line(path: Path, students: list[tuple[list[str], list[int]]]) -> Path:
    path.write_text(
        "".join(f"{len(items)}\n{','.join(items)}\n{','.join(map(str, correct))}\n" for items, correct in students)
    )
    return path


def planted(
    copies: str, students: int = 60, length: int = 40, seed: int = 0
) -> tuple[list[tuple[list[str], list[int]]], list[list[int]]]:
    """Students answering skills 3..11 independently (60% right), and now and then a problem tagged with skills 1 and 2.

    ``copies``: "mixed" keeps its answer once per skill, in either order; "fixed" always 1 then 2; "none" is
    two independent answers (no repeat).  A single-skill answer always follows, so every 1-2 adjacency is one
    problem.  Returns the students and, per student, the positions of each problem's second row.
    """
    rng = np.random.default_rng(seed)
    out, seconds = [], []
    for _ in range(students):
        items: list[str] = []
        correct: list[int] = []
        second: list[int] = []
        while len(items) < length:
            if rng.random() < 0.15:
                answer = int(rng.random() < 0.6)
                order = ["1", "2"] if copies == "fixed" or rng.random() < 0.5 else ["2", "1"]
                items += order
                correct += [answer, answer if copies != "none" else int(rng.random() < 0.6)]
                second.append(len(items) - 1)
            items.append(str(rng.integers(3, 12)))
            correct.append(int(rng.random() < 0.6))
        out.append((items, correct))
        seconds.append(second)
    return out, seconds


@pytest.fixture
def mixed_file(tmp_path):
    students, seconds = planted("mixed")
    return write_3line(tmp_path / "mixed.txt", students), seconds


def test_planted_mixed_order_repeats_are_flagged_at_exactly_their_second_rows(mixed_file):
    path, seconds = mixed_file
    students, _ = read_dataset(path, "3line")
    signature = repeat_signature(students)
    assert signature.pairs == {("1", "2"), ("2", "1")}
    assert len(signature.mixed) == 1 and signature.fixed == []
    ab, ba = signature.mixed[0]
    assert ab.agreement == ba.agreement == 1.0 and ab.count >= 50 and ba.count >= 50
    assert 0.5 < signature.base_rate < 0.65  # independent answers agree 0.6^2 + 0.4^2 = 52%, raised by the copies
    assert signature.flagged_positions == sum(map(len, seconds)) == ab.count + ba.count
    for student, expected in zip(students, seconds):
        assert np.flatnonzero(signature.flags(student)).tolist() == expected


def test_planted_fixed_order_repeats_are_flagged_in_their_one_order(tmp_path):
    students, seconds = planted("fixed")
    read, _ = read_dataset(write_3line(tmp_path / "fixed.txt", students), "3line")
    signature = repeat_signature(read)
    assert signature.mixed == [] and [(p.first, p.second) for p in signature.fixed] == [("1", "2")]
    assert signature.flagged_positions == sum(map(len, seconds))


def test_independent_answers_on_the_same_skill_pairs_are_not_flagged(tmp_path):
    students, _ = planted("none")
    read, _ = read_dataset(write_3line(tmp_path / "clean.txt", students), "3line")
    signature = repeat_signature(read)
    assert not signature.leaks and signature.flagged_positions == 0
    assert not any(signature.flags(s).any() for s in read)


def test_rarer_pairs_than_min_count_and_copies_without_wrong_answers_are_not_flagged(mixed_file, tmp_path):
    path, _ = mixed_file
    students, _ = read_dataset(path, "3line")
    assert not repeat_signature(students, RepeatRule(min_count=10_000)).leaks
    # two always-right skills agree every time, but that is no copy of an answer
    easy = [(["1", "2", "3", "2", "1", "4"] * 20, [1, 1, 0, 1, 1, 1] * 20) for _ in range(5)]
    read, _ = read_dataset(write_3line(tmp_path / "easy.txt", easy), "3line")
    signature = repeat_signature(read)
    assert {(p.first, p.second) for p in signature.fixed} == set() and signature.mixed == []


def test_csv_answers_spread_over_rows_by_order_id_are_counted_but_merged_by_the_reader():
    report = audit(FIXTURES / "skill_builder_small.csv", "assistments")
    checks = report.to_json()["checks"]
    assert checks["multi_skill_rows"]["order_ids"] == 1 and checks["multi_skill_rows"]["extra_rows"] == 1
    assert checks["multi_skill_rows"]["examples"] == [
        "order_id 33023000 (user 64525, problem 51450): 2 rows, skills 11, 13 (lines 5, 6)"
    ]
    assert checks["time_order"]["students"] == 1 and checks["time_order"]["rows"] == 1  # 33022500 after 33022709
    assert checks["duplicate_rows"]["rows"] == 0
    assert not report.leaks  # one answer per order_id as read: nothing repeats


def test_csv_exact_duplicate_rows(tmp_path):
    lines = (FIXTURES / "skill_builder_small.csv").read_bytes().splitlines(keepends=True)
    path = tmp_path / "dup.csv"
    longer = lines[3].rstrip(b"\n") + b",a field past the header\n"  # read, and no copy of line 4
    path.write_bytes(b"".join(lines + [b"\n", lines[1], lines[1], lines[2], longer]))
    checks = audit(path, "assistments").to_json()["checks"]
    assert checks["duplicate_rows"]["rows"] == 3
    assert checks["duplicate_rows"]["examples"] == [
        "line 11 repeats line 2",
        "line 12 repeats line 2",
        "line 13 repeats line 3",
    ]  # line 10 is blank


def test_duplicate_short_and_constant_students_are_counted(tmp_path):
    long_mixed = (["1", "2", "3"] * 4, [1, 0, 1] * 4)
    students = [
        long_mixed, (["1", "1", "2"], [1, 1, 1]), long_mixed, (["4"], [0]), (["5", "6"], [0, 0]),
        (["1", "1", "2"], [1, 1, 1]), (["2", "2", "2", "2"], [0, 0, 0, 0]), (["3", "2", "1"], [0, 1, 0]),
    ]  # fmt: skip
    report = audit(write_3line(tmp_path / "s.txt", students), "3line", min_length=3)
    checks = report.to_json()["checks"]
    assert checks["duplicate_students"]["students"] == 2 and checks["duplicate_students"]["unlikely_by_chance"] == 1
    assert checks["duplicate_students"]["level"] == "warn"
    assert checks["short_students"]["students"] == 2 and checks["short_students"]["answers"] == 3
    assert (checks["constant_labels"]["all_correct"], checks["constant_labels"]["all_wrong"]) == (2, 3)


def test_a_file_sorted_by_item_is_called_so(tmp_path):
    students = [
        ([str(i) for i in sorted(np.random.default_rng(k).integers(0, 20, 12))], [k % 2, 1] * 6) for k in range(20)
    ]
    checks = audit(write_3line(tmp_path / "sorted.txt", students), "3line").to_json()["checks"]
    assert checks["time_order"]["level"] == "warn" and checks["time_order"]["fraction"] == 1.0
    shuffled = [(list(reversed(items)), correct) for items, correct in students]
    assert (
        audit(write_3line(tmp_path / "back.txt", shuffled), "3line").to_json()["checks"]["time_order"]["level"]
        == "note"
    )


def test_strict_fails_on_a_leak_with_one_line_and_passes_a_clean_file(mixed_file, tmp_path, capsys):
    path, seconds = mixed_file
    assert main(["audit", path]) == 0  # a report, not a verdict, without --strict
    assert (
        "LEAK  repeat_signature: 1 item pairs in both orders (2 ordered pairs) agree 100.0%-100.0%"
        in capsys.readouterr().out
    )
    assert main(["audit", "--strict", path]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stream-kt audit: leak in {path}: repeat_signature:")
    assert f"{sum(map(len, seconds))} positions flagged" in err[0]
    clean, _ = planted("none")
    assert main(["audit", "--strict", write_3line(tmp_path / "clean.txt", clean)]) == 0
    assert capsys.readouterr().err == ""


def test_json_report_parses_and_says_what_a_3line_file_cannot_show(mixed_file, capsys):
    path, seconds = mixed_file
    assert main(["audit", "--json", path]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["leak"] is True and report["format"] == "3line"
    assert report["checks"]["repeat_signature"]["positions_flagged"] == sum(map(len, seconds))
    assert "problem ids, order ids, timestamps" in report["cannot_see"]
    assert set(report["checks"]) == {
        "repeat_signature",
        "duplicate_students",
        "same_item_twice",
        "time_order",
        "short_students",
        "constant_labels",
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["audit", "/nonexistent/x.csv"], "stream-kt audit: error: /nonexistent/x.csv: no such file"),
        (["audit", FIXTURES / "small.3line", "--format", "assistments"], "missing column(s)"),
        (
            ["audit", FIXTURES / "small.3line", "--min-agreement", "2"],
            "stream-kt audit: error: Invalid value for '--min-agreement'",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


SHARED_FILES = {
    "assist2009/skill_id_train.csv": dict(rc=1, mixed=8, fixed=0, positions=6384, base=0.782),
    "assist2009-xiong2016/0910_c_train.csv": dict(rc=0, mixed=0, fixed=0, positions=0, base=0.644),
    "assist2009-xiong2016/0910_b_train.csv": dict(rc=1, mixed=0, fixed=115, positions=34901, base=0.771),
}


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared ASSISTments 2009 data not present")
@pytest.mark.parametrize("name", list(SHARED_FILES))
def test_shared_assist2009_files(name, capsys):
    expected = SHARED_FILES[name]
    assert main(["audit", "--strict", "--json", SHARED / name]) == expected["rc"]
    signature = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checks"]["repeat_signature"]
    assert (
        len(signature["mixed_order_pairs"]) == expected["mixed"]
        and len(signature["fixed_order_pairs"]) == expected["fixed"]
    )
    assert signature["positions_flagged"] == expected["positions"]
    assert signature["base_rate"] == pytest.approx(expected["base"], abs=5e-4)
    if name.endswith(
        "skill_id_train.csv"
    ):  # the DKT+ split's signature: 31->48 and 48->31 among the pairs, agreeing 93-98%
        pairs = {(p["first"], p["second"]): p["agreement"] for pair in signature["mixed_order_pairs"] for p in pair}
        assert ("31", "48") in pairs and ("48", "31") in pairs
        assert 0.93 <= min(pairs.values()) and max(pairs.values()) <= 0.98
