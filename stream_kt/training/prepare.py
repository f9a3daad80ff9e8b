"""From files to encoded train / validation / test students, split by student."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stream_kt.data.readers import CSV_REQUIRED, item_names, read_dataset
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.split import Split, split_students
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.errors import DataError

FORMAT_CHOICES = ("auto", "3line", "assistments", "csv", "pykt")


def detect_format(path: str | Path) -> str:
    """'assistments' when the first line is a CSV header naming order_id, 'csv' when it names
    student_id, item_id and correct (``stream-kt export``), 'pykt' when it is ``uid,length``
    (pyKT's sequence file), else '3line'."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as g:
                head = g.read(4096)
    except OSError:
        return "3line"  # read_dataset reports the real problem
    first = head.split(b"\n", 1)[0].decode("iso-8859-1")
    if "order_id" in first:
        return "assistments"
    columns = [c.strip() for c in first.strip().split(",")]
    if set(CSV_REQUIRED) <= set(columns):
        return "csv"
    return "pykt" if len(columns) == 2 and columns[0] and columns[1].isdigit() else "3line"


def load_students(path: str | Path, fmt: str = "auto", item: str = "skill_id") -> list[StudentSequence]:
    fmt = detect_format(path) if fmt == "auto" else fmt
    students, _ = read_dataset(path, fmt, item)
    return students


def students_of(data: str | Path, fmt: str, item: str, ids: Sequence[str]) -> list[StudentSequence]:
    """The students of file ``data`` whose ids are in ``ids`` (one role of a checkpoint's split), in file order."""
    wanted = set(ids)
    return [s for s in load_students(data, fmt, item) if s.student_id in wanted]


def all_students_of(
    data: str | Path, fmt: str, item: str, ids: Sequence[str], source: str | Path, what: str
) -> list[StudentSequence]:
    """``students_of``, and a ``DataError`` naming ``source`` when ``data`` lacks any of them (the wrong file)."""
    students = students_of(data, fmt, item, ids)
    if len(students) < len(ids):
        raise DataError(
            f"{data}: {len(ids) - len(students)} of {source}'s {len(ids)} {what} students are not in it; "
            "give the file it was trained on"
        )
    return students


@dataclass
class Prepared:
    vocab: Vocabulary
    split: Split
    train: list[EncodedSequence]
    valid: list[EncodedSequence]
    test: list[EncodedSequence]


def prepare(
    data: str | Path,
    fmt: str,
    item: str,
    test_data: str | Path | None,
    seed: int,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.2,
    skills: str = "combined",
    questions: bool = False,
) -> Prepared:
    """Split ``data`` by student (held-out students from ``test_data`` when given) and encode.

    The vocabulary is built from training and validation students only, so held-out
    students never influence the model, not even through its item set.  ``skills`` and
    ``questions``: what the vocabulary makes of skill sets and question ids (``Vocabulary.build``).
    """
    students = load_students(data, fmt, item)
    if test_data is not None:
        held_out = load_students(test_data, fmt, item)
        split = split_students(
            [s.student_id for s in students], seed, valid_fraction, 0.0, test_source=f"file:{Path(test_data).name}"
        )
    else:
        split = split_students([s.student_id for s in students], seed, valid_fraction, test_fraction)
        held_out = []
    by_id = {s.student_id: s for s in students}
    train_students = [by_id[i] for i in split.train]
    valid_students = [by_id[i] for i in split.valid]
    if not train_students or not valid_students:
        raise DataError(f"{data}: {len(students)} students are too few to split into training and validation")
    vocab = Vocabulary.build(
        train_students + valid_students, item, item_names(students), skills=skills, questions=questions
    )
    test_students = held_out or [by_id[i] for i in split.test]
    return Prepared(
        vocab,
        split,
        [vocab.encode(s) for s in train_students],
        [vocab.encode(s) for s in valid_students],
        [vocab.encode(s) for s in test_students],
    )
