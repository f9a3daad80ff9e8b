"""Readers for the four on-disk formats stream-kt accepts.

* ``3line``: the DKT / DKVMN release format.  Per student three lines: the number of
  answers, the comma-separated item ids, the comma-separated 0/1 responses.  There are
  no student ids: a student is named ``<file stem>:<position>`` (0-based), so ids are
  stable and distinct across a train and a test file.
* ``assistments``: the raw ASSISTments skill-builder CSV (plain or gzipped,
  ISO-8859-1).  Its traps, each handled on purpose:

  1. A problem tagged with several skills appears once per skill, every copy with the
     same ``order_id``.  That is ONE answer: we keep one interaction per order_id, and
     its skill is the sorted set of the tagged skill ids joined with ``_`` (``"10_23"``),
     and the problem id is the answer's question.  ``Vocabulary`` decides what a model
     sees of the set: the combination as an entry of its own, the set, or its first skill.
  2. Rows with an empty ``skill_id``: with ``item=skill_id`` they are dropped (counted
     in the report); with ``item=problem_id`` they are kept.
  3. Rows are not in answer order in the file: interactions are sorted by the integer
     ``order_id`` within each student.
* ``csv``: what ``stream-kt export`` writes, one answer per row, UTF-8, header
  ``student_id,item_id,correct,ts_ms,elapsed_ms``: the raw item id, 0/1, ms since
  epoch and ms spent answering (``ts_ms`` and ``elapsed_ms`` may be empty, or absent
  as columns).  A student's answers are in file order; the item id is whichever id
  the events carried, so ``--item`` does not apply.  An optional ``question_id`` column
  names the question answered; an item id may list several skills, joined by ``_`` or
  ``;`` (one answer to a question with a skill set).
* ``pykt``: the sequence file pyKT's preprocessing writes (``data.txt``).  Per student
  six lines: ``uid,length``; question ids (or ``NA``); concept ids, a question's
  several concepts joined by ``_``; 0/1 responses; timestamps in ms (or ``NA``); time
  spent in ms (or ``NA``).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from stream_kt.data.sequences import StudentSequence, id_sort_key, join_skills, skills_of
from stream_kt.errors import DataError

FORMATS = ("3line", "assistments", "csv", "pykt")
ITEM_COLUMNS = ("skill_id", "problem_id")
ASSISTMENTS_REQUIRED = ("order_id", "user_id", "problem_id", "skill_id", "correct")
CSV_COLUMNS = ("student_id", "item_id", "correct", "ts_ms", "elapsed_ms", "question_id")
CSV_REQUIRED = CSV_COLUMNS[:3]


@dataclass
class ReadReport:
    """What a reader kept and dropped, for logs and tests."""

    students: int = 0
    interactions: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count


def read_dataset(
    path: str | Path, fmt: str = "3line", item: str = "skill_id"
) -> tuple[list[StudentSequence], ReadReport]:
    """Read ``path`` in format ``fmt``; raise ``DataError`` with one clear line on any problem."""
    path = Path(path)
    if item not in ITEM_COLUMNS:
        raise DataError(f"unknown item column {item!r}: choose one of {', '.join(ITEM_COLUMNS)}")
    text = read_text(path, fmt)
    if fmt == "3line":
        students, report = _parse_3line(text, path)
    elif fmt == "csv":
        students, report = _parse_csv(text, path)
    elif fmt == "pykt":
        students, report = _parse_pykt(text, path)
    else:
        students, report = _parse_assistments(text, path, item)
    if not students:
        raise DataError(f"{path}: no students with at least one answer")
    report.students = len(students)
    report.interactions = sum(len(s) for s in students)
    return students, report


def read_text(path: str | Path, fmt: str) -> str:
    """The text of a data file in format ``fmt`` (gunzipped, decoded); ``DataError`` with one
    clear line on any problem."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip ({exc})") from None
    return raw.decode("iso-8859-1") if fmt == "assistments" else _decode_ascii(raw, path)


def _decode_ascii(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None


def _stripped_lines(text: str, path: Path, per_student: int, what: str) -> list[str]:
    """The lines of a file of ``per_student`` lines a student (``what`` they are), stripped, trailing blanks dropped."""
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) % per_student:
        raise DataError(f"{path}: {len(lines)} lines is not a multiple of {per_student} ({what})")
    return lines


def _parse_3line(text: str, path: Path) -> tuple[list[StudentSequence], ReadReport]:
    lines = _stripped_lines(text, path, 3, "3-line format: count, items, responses")
    report = ReadReport()
    students: list[StudentSequence] = []
    for position in range(len(lines) // 3):
        line_no = position * 3 + 1
        count_line, item_line, answer_line = lines[position * 3 : position * 3 + 3]
        try:
            count = int(count_line)
        except ValueError:
            raise DataError(f"{path}:{line_no}: expected the number of answers, got {count_line[:40]!r}") from None
        items = tuple(x.strip() for x in item_line.split(",") if x.strip())
        answers = [x.strip() for x in answer_line.split(",") if x.strip()]
        if len(items) != count or len(answers) != count:
            raise DataError(
                f"{path}:{line_no}: header says {count} answers but found {len(items)} items "
                f"and {len(answers)} responses"
            )
        if any(a not in ("0", "1") for a in answers):
            raise DataError(f"{path}:{line_no + 2}: responses must be 0 or 1")
        if count == 0:
            report.drop("empty student")
            continue
        students.append(StudentSequence(f"{path.stem}:{position}", items, tuple(int(a) for a in answers)))
    return students, report


def _parse_assistments(text: str, path: Path, item: str) -> tuple[list[StudentSequence], ReadReport]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ASSISTMENTS_REQUIRED if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (ASSISTments CSV needs {', '.join(ASSISTMENTS_REQUIRED)})"
        )
    report = ReadReport()
    # order_id -> merged row; several rows share an order_id when a problem has several skills (trap 1)
    orders: dict[int, dict] = {}
    names: dict[str, str] = {}
    for line_no, row in enumerate(reader, start=2):
        try:
            order_id = int(row["order_id"])
            correct = int(float(row["correct"]))
        except (TypeError, ValueError):
            raise DataError(f"{path}:{line_no}: order_id and correct must be numbers") from None
        if correct not in (0, 1):
            raise DataError(f"{path}:{line_no}: correct must be 0 or 1, got {row['correct']!r}")
        skill = _clean_id(row["skill_id"])
        if skill and row.get("skill_name"):
            names[skill] = row["skill_name"]
        merged = orders.get(order_id)
        if merged is None:
            elapsed = _clean_id(row.get("ms_first_response") or "")
            orders[order_id] = {
                "user": row["user_id"].strip(),
                "problem": _clean_id(row["problem_id"]),
                "skills": {skill} if skill else set(),
                "correct": correct,
                "elapsed": int(elapsed) if elapsed.lstrip("-").isdigit() else None,
            }
        else:
            report.drop("duplicate row of a multi-skill problem")
            if skill:
                merged["skills"].add(skill)
    per_student: dict[str, list[tuple[int, str, int, int | None, str]]] = defaultdict(list)
    for order_id, row in orders.items():
        if item == "skill_id":
            if not row["skills"]:
                report.drop("no skill id")  # trap 2
                continue
            item_id = join_skills(list(row["skills"]))
        else:
            if not row["problem"]:
                report.drop("no problem id")
                continue
            item_id = row["problem"]
        per_student[row["user"]].append((order_id, item_id, row["correct"], row["elapsed"], row["problem"]))
    students = []
    for user, rows in per_student.items():
        rows.sort(key=lambda r: r[0])  # trap 3: answer order is order_id order
        elapsed_ms = tuple(r[3] if r[3] is not None else 0 for r in rows)
        students.append(
            StudentSequence(
                student_id=user,
                items=tuple(r[1] for r in rows),
                correct=tuple(r[2] for r in rows),
                elapsed_ms=elapsed_ms if any(r[3] is not None for r in rows) else None,
                questions=tuple(r[4] for r in rows) if item == "skill_id" else None,
                item_names=names if item == "skill_id" else {},
            )
        )
    students.sort(key=lambda s: id_sort_key(s.student_id))
    return students, report


def _parse_csv(text: str, path: Path) -> tuple[list[StudentSequence], ReadReport]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (the csv format has {','.join(CSV_COLUMNS)})")
    rows: dict[
        str, list[tuple[str, int, int | None, int | None, str]]
    ] = {}  # student -> (item, correct, ts, elapsed, question), first appearance first
    for line_no, row in enumerate(reader, start=2):
        student, item = (row["student_id"] or "").strip(), skill_set_id(row["item_id"] or "")
        if not student or not item:
            raise DataError(f"{path}:{line_no}: student_id and item_id must not be empty")
        if (row["correct"] or "").strip() not in ("0", "1"):
            raise DataError(f"{path}:{line_no}: correct must be 0 or 1, got {row['correct']!r}")
        ts, elapsed = (_optional_int(row.get(name), name, path, line_no) for name in ("ts_ms", "elapsed_ms"))
        rows.setdefault(student, []).append(
            (item, int(row["correct"]), ts, elapsed, (row.get("question_id") or "").strip())
        )
    students = []
    for student, answers in rows.items():
        ts_ms = tuple(a[2] for a in answers if a[2] is not None)
        elapsed_ms = tuple(a[3] if a[3] is not None else 0 for a in answers)
        students.append(
            StudentSequence(
                student_id=student,
                items=tuple(a[0] for a in answers),
                correct=tuple(a[1] for a in answers),
                ts_ms=ts_ms if len(ts_ms) == len(answers) else None,  # a time for every answer, or none
                elapsed_ms=elapsed_ms if any(a[3] is not None for a in answers) else None,
                questions=tuple(a[4] for a in answers) if any(a[4] for a in answers) else None,
            )
        )
    return students, ReadReport()


def _parse_pykt(text: str, path: Path) -> tuple[list[StudentSequence], ReadReport]:
    lines = _stripped_lines(text, path, 6, "pyKT: uid,length; questions; concepts; responses; timestamps; times spent")
    report = ReadReport()
    students: list[StudentSequence] = []
    for start in range(0, len(lines), 6):
        head, questions, concepts, responses, stamps, spent = lines[start : start + 6]
        user, _, count_text = head.rpartition(",")
        if not user or not count_text.strip().isdigit():
            raise DataError(f"{path}:{start + 1}: expected 'uid,length', got {head[:40]!r}")
        count = int(count_text)
        columns = {}
        for offset, name, line in (
            (1, "questions", questions),
            (2, "concepts", concepts),
            (3, "responses", responses),
            (4, "timestamps", stamps),
            (5, "times spent", spent),
        ):
            if line.upper() == "NA" and name not in ("concepts", "responses"):
                continue
            values = [x.strip() for x in line.split(",")]
            if len(values) != count:
                raise DataError(f"{path}:{start + offset + 1}: {len(values)} {name} for a sequence of {count}")
            columns[name] = values
        if "concepts" not in columns or "responses" not in columns:
            raise DataError(
                f"{path}:{start + 3}: every student needs concepts and responses (NA is only for questions and times)"
            )
        if any(r not in ("0", "1") for r in columns["responses"]):
            raise DataError(f"{path}:{start + 4}: responses must be 0 or 1")
        if any(not skill_set_id(c) for c in columns["concepts"]):
            raise DataError(f"{path}:{start + 3}: a concept id is empty")
        numbers = {}
        for name in ("timestamps", "times spent"):
            if name in columns:
                try:
                    numbers[name] = tuple(max(int(float(v)), 0) for v in columns[name])
                except ValueError:
                    raise DataError(f"{path}:{start + 1}: {name} must be numbers (ms)") from None
        if count == 0:
            report.drop("empty student")
            continue
        students.append(
            StudentSequence(
                student_id=user.strip(),
                items=tuple(skill_set_id(c) for c in columns["concepts"]),
                correct=tuple(int(r) for r in columns["responses"]),
                ts_ms=numbers.get("timestamps"),
                elapsed_ms=numbers.get("times spent"),
                questions=tuple(columns["questions"]) if "questions" in columns else None,
            )
        )
    return students, report


def skill_set_id(value: str) -> str:
    """A raw item id naming one skill, or a set as ``_``-joined ids (kept as written), or as ``;``-separated ids:
    ``" 23;10 "`` -> ``"10_23"`` (sorted, no repeats, ``_``-joined, as the ASSISTments reader writes a set)."""
    if ";" not in value:
        return value.strip()
    return join_skills(list({p.strip() for p in value.split(";")} - {""}))


def _optional_int(value: str | None, name: str, path: Path, line_no: int) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise DataError(f"{path}:{line_no}: {name} must be a non-negative integer (ms), got {value[:40]!r}")
    return int(value)


def _clean_id(value: str) -> str:
    """'12', '12.0', ' 12 ' -> '12'; '' and 'NA' -> ''."""
    value = (value or "").strip()
    if value.upper() in ("", "NA", "NAN", "NULL"):
        return ""
    if value.endswith(".0") and value[:-2].lstrip("-").isdigit():
        return value[:-2]
    return value


def item_names(students: list[StudentSequence]) -> dict[str, str]:
    """Names for raw item ids, where the source carries them (ASSISTments skill_name)."""
    names: dict[str, str] = {}
    for student in students:
        names.update(student.item_names)
    for item in {i for s in students for i in s.items if "_" in i}:
        parts = [names.get(p) for p in item.split("_")]
        if all(parts):
            names[item] = " + ".join(parts)  # type: ignore[arg-type]
    return names


def write_3line(students: list[StudentSequence], path: str | Path) -> None:
    """Write ``students`` in the 3-line format (used by the synthetic generator)."""
    with open(path, "w", encoding="utf-8") as out:
        for s in students:
            out.write(f"{len(s)}\n{','.join(s.items)}\n{','.join(map(str, s.correct))}\n")


def write_assistments(students: list[StudentSequence], path: str | Path) -> None:
    """Write ``students`` as an ASSISTments skill-builder CSV: one row per answer and skill (an answer's skills
    share its ``order_id``, as in the real files), its question as ``problem_id`` (the item where there is
    none), ``ms_first_response`` where the students have response times."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*ASSISTMENTS_REQUIRED, "ms_first_response"])
        order_id = 0
        for s in students:
            for k, (item, answer) in enumerate(zip(s.items, s.correct)):
                order_id += 1
                problem = s.questions[k] if s.questions is not None and s.questions[k] else item
                for skill in skills_of(item):
                    writer.writerow(
                        [
                            order_id,
                            s.student_id,
                            problem,
                            skill,
                            answer,
                            "" if s.elapsed_ms is None else s.elapsed_ms[k],
                        ]
                    )


def write_csv(students: list[StudentSequence], path: str | Path) -> None:
    """Write ``students`` in the ``csv`` format, each student's answers in order (an unknown time: an empty cell;
    the ``question_id`` column only where some student has question ids)."""
    with_questions = any(s.questions is not None for s in students)
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS if with_questions else CSV_COLUMNS[:-1])
        for s in students:
            for k, (item, answer) in enumerate(zip(s.items, s.correct)):
                ts = "" if s.ts_ms is None else s.ts_ms[k]
                elapsed = "" if s.elapsed_ms is None else s.elapsed_ms[k]
                question = [] if not with_questions else ["" if s.questions is None else s.questions[k]]
                writer.writerow([s.student_id, item, answer, ts, elapsed, *question])


def write_pykt(students: list[StudentSequence], path: str | Path) -> None:
    """Write ``students`` in pyKT's sequence format (``NA`` where they have no question ids or times)."""
    line = lambda values: "NA" if values is None else ",".join(map(str, values))  # noqa: E731
    with open(path, "w", encoding="utf-8") as out:
        for s in students:
            out.write(
                f"{s.student_id},{len(s)}\n{line(s.questions)}\n{line(s.items)}\n"
                f"{line(s.correct)}\n{line(s.ts_ms)}\n{line(s.elapsed_ms)}\n"
            )


WRITERS = {"3line": write_3line, "assistments": write_assistments, "csv": write_csv, "pykt": write_pykt}
