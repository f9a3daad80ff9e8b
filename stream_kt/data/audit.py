"""What in a data set leaks an answer into its own prediction, or misleads an evaluation (``stream-kt audit``).

The leak that matters most: a problem tagged with several skills kept once per skill.
The copies carry the same answer, so where they sit next to each other a model sees the
answer one step before it predicts its copy.  An ASSISTments CSV shows the copies
directly (rows sharing an ``order_id``; stream-kt's reader merges them into one
answer).  A 3-line file has no problem or order ids: there the copies show only by
their signature, in the sequences as read:

* **mixed order**: a pair of skills a, b follows each other often, in both orders
  (a->b and b->a), and the two answers agree far more often than answers do at other
  skill changes (the base rate).  The copies of each problem are kept in either skill
  order, so both orders mix copies with genuine next answers;
* **fixed order**: a->b often, its answers agreeing (almost) always: the copies always
  in the same order.

Either way the answers must agree on wrong answers too (two skills everyone gets right
agree every time, and copy nothing).

A flagged position is an answer whose predecessor is the other half of a flagged pair:
the prediction a copy would leak into.  ``RepeatSignature.flags`` gives them per student,
so an evaluation can score without them.

The other checks mislead rather than leak: exact duplicate rows or students, answers
not in time order, very short students and students whose answers are all 0 or all 1.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream_kt.data.readers import _clean_id, read_dataset, read_text
from stream_kt.data.sequences import StudentSequence, id_sort_key

LEAK, WARN, NOTE, OK = "leak", "warn", "note", "ok"
DUPLICATE_LENGTH = 10  # a duplicate student this long, with right and wrong answers, is unlikely by chance


@dataclass(frozen=True)
class RepeatRule:
    """When adjacent answers on two items look like copies of one answer."""

    min_count: int = 50  # adjacent occurrences of an ordered item pair (each order, for the mixed-order arm)
    min_agreement: float = 0.93  # mixed order: the answers agree at least this often, in both orders
    min_lift: float = 0.10  # and at least this far above the base rate of agreement at item changes (both arms)
    copy_agreement: float = 0.99  # fixed order: the answers agree at least this often in one order
    min_both_wrong: int = (
        5  # and, either arm, agree on wrong answers too this many times (two always-right skills are no copies)
    )


@dataclass(frozen=True)
class PairStat:
    """Adjacent answers on item ``first`` then item ``second`` (a different one)."""

    first: str
    second: str
    count: int
    agree: int  # both right or both wrong
    both_wrong: int

    @property
    def agreement(self) -> float:
        return self.agree / self.count if self.count else 0.0

    def to_json(self) -> dict:
        return {
            "first": self.first,
            "second": self.second,
            "count": self.count,
            "agreement": round(self.agreement, 4),
            "both_wrong": self.both_wrong,
        }


@dataclass
class RepeatSignature:
    """The multi-skill repeat signature of a set of students (see the module docstring)."""

    rule: RepeatRule
    answers: int
    changes: int  # adjacent answer pairs on different items
    base_rate: float  # share of them whose answers agree
    mixed: list[tuple[PairStat, PairStat]]  # (a->b, b->a), both flagged
    fixed: list[PairStat]  # a->b flagged in this order only
    flagged_positions: int = 0
    pairs: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    @property
    def leaks(self) -> bool:
        return bool(self.pairs)

    @property
    def flagged_fraction(self) -> float:
        return self.flagged_positions / self.answers if self.answers else 0.0

    def flags(self, student: StudentSequence) -> np.ndarray:
        """Per position of ``student``: True where the answer before it is the other half of a flagged pair."""
        out = np.zeros(len(student), bool)
        for t in range(1, len(student)):
            out[t] = (student.items[t - 1], student.items[t]) in self.pairs
        return out

    def to_json(self) -> dict:
        return {
            "base_rate": round(self.base_rate, 4),
            "item_changes": self.changes,
            "mixed_order_pairs": [[ab.to_json(), ba.to_json()] for ab, ba in self.mixed],
            "fixed_order_pairs": [p.to_json() for p in self.fixed],
            "ordered_pairs_flagged": len(self.pairs),
            "positions_flagged": self.flagged_positions,
            "fraction_flagged": round(self.flagged_fraction, 5),
            "rule": vars(self.rule),
        }


def pair_stats(students: list[StudentSequence]) -> dict[tuple[str, str], PairStat]:
    """Every ordered pair of different items answered one after the other, with how often the answers agree."""
    count: Counter[tuple[str, str]] = Counter()
    agree: Counter[tuple[str, str]] = Counter()
    both_wrong: Counter[tuple[str, str]] = Counter()
    for s in students:
        for a, b, x, y in zip(s.items, s.items[1:], s.correct, s.correct[1:]):
            if a != b:
                count[a, b] += 1
                if x == y:
                    agree[a, b] += 1
                    if not x:
                        both_wrong[a, b] += 1
    return {p: PairStat(p[0], p[1], n, agree[p], both_wrong[p]) for p, n in count.items()}


def repeat_signature(students: list[StudentSequence], rule: RepeatRule | None = None) -> RepeatSignature:
    """Find the item pairs whose adjacent answers look like copies of one answer, and the positions they flag."""
    rule = rule or RepeatRule()
    stats = pair_stats(students)
    changes = sum(p.count for p in stats.values())
    base = sum(p.agree for p in stats.values()) / changes if changes else 0.0
    mixed_bar = max(rule.min_agreement, base + rule.min_lift)
    copy_bar = max(rule.copy_agreement, base + rule.min_lift)
    high = lambda p: p.count >= rule.min_count and p.agreement >= mixed_bar and p.both_wrong >= rule.min_both_wrong
    mixed: list[tuple[PairStat, PairStat]] = []
    for (a, b), ab in stats.items():
        ba = stats.get((b, a))
        if ba is not None and id_sort_key(a) < id_sort_key(b) and high(ab) and high(ba):
            mixed.append((ab, ba) if ab.count >= ba.count else (ba, ab))
    in_mixed = {(p.first, p.second) for pair in mixed for p in pair}
    fixed = [
        p
        for key, p in stats.items()
        if key not in in_mixed
        and p.count >= rule.min_count
        and p.agreement >= copy_bar
        and p.both_wrong >= rule.min_both_wrong
    ]
    mixed.sort(key=lambda pair: -min(p.agreement for p in pair))
    fixed.sort(key=lambda p: (-p.count, p.first, p.second))
    pairs = frozenset(in_mixed | {(p.first, p.second) for p in fixed})
    flagged = sum(stats[p].count for p in pairs)
    return RepeatSignature(rule, sum(len(s) for s in students), changes, base, mixed, fixed, flagged, pairs)


@dataclass
class Finding:
    """One check's result: its level (leak, warn, note, ok), one line, a few examples and its numbers."""

    check: str
    level: str
    summary: str
    examples: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"level": self.level, "summary": self.summary, "examples": self.examples, **self.numbers}


@dataclass
class AuditReport:
    path: str
    fmt: str
    item: str
    students: int
    answers: int
    correct_rate: float
    sees: str
    cannot_see: str
    findings: list[Finding]
    signature: RepeatSignature

    @property
    def leaks(self) -> list[Finding]:
        return [f for f in self.findings if f.level == LEAK]

    def to_json(self) -> dict:
        return {
            "data": self.path,
            "format": self.fmt,
            "item": self.item,
            "students": self.students,
            "answers": self.answers,
            "correct_rate": round(self.correct_rate, 4),
            "sees": self.sees,
            "cannot_see": self.cannot_see,
            "leak": bool(self.leaks),
            "checks": {f.check: f.to_json() for f in self.findings},
        }

    def lines(self) -> list[str]:
        out = [
            f"audit of {self.path} ({self.fmt if self.fmt == '3line' else f'{self.fmt}, {self.item}'}): "
            f"{self.students:,} students, {self.answers:,} answers, correct rate {self.correct_rate:.3f}",
            f"  sees: {self.sees}",
            f"  cannot see: {self.cannot_see}",
        ]
        for f in self.findings:
            out.append(f"{f.level.upper():<5} {f.check}: {f.summary}")
            out.extend(f"        {e}" for e in f.examples)
        return out


def audit(
    path: str | Path,
    fmt: str,
    item: str = "skill_id",
    rule: RepeatRule | None = None,
    min_length: int = 3,
    examples: int = 3,
) -> AuditReport:
    """Audit the file ``path`` (format ``3line`` or ``assistments``): every check on the students as stream-kt reads
    them, and for an ASSISTments CSV also its raw rows."""
    students, _ = read_dataset(path, fmt, item)
    signature = repeat_signature(students, rule)
    rows = _Rows(read_text(path, fmt) if fmt == "assistments" else "")
    findings = []
    if fmt == "assistments":
        findings.append(_order_id_repeats(rows, examples))
    findings.append(_signature_finding(signature, examples))
    if fmt == "assistments":
        findings.append(_duplicate_rows(rows, examples))
    findings += [_duplicate_students(students, min_length, examples), _same_item_twice(students, rule or RepeatRule())]
    findings.append(_csv_order(rows, examples) if fmt == "assistments" else _sorted_items(students, examples))
    findings += [_short_students(students, min_length, examples), _constant_labels(students, examples)]
    answers = sum(len(s) for s in students)
    correct_rate = sum(sum(s.correct) for s in students) / answers
    if fmt == "assistments":
        sees = (
            "raw rows with order ids, problem ids and skill ids; students as read "
            "(one answer per order_id, sorted by order_id)"
        )
        cannot_see = (
            "repeats of one answer under different order ids other than by the signature; timestamps "
            "(only order ids order the answers)"
        )
    else:
        sees = "items and answers in file order; students by position"
        cannot_see = (
            "problem ids, order ids, timestamps: multi-skill repeats show only by their signature, so repeats that are "
            f"not adjacent, of item pairs seen fewer than {(rule or RepeatRule()).min_count} times, "
            "or that do not raise agreement are not seen; time order is only hinted at"
        )
    return AuditReport(
        str(path), fmt, item, len(students), answers, correct_rate, sees, cannot_see, findings, signature
    )


def _signature_finding(sig: RepeatSignature, examples: int) -> Finding:
    numbers = {**sig.to_json()}
    base = f"base rate of agreement at item changes {sig.base_rate:.1%} ({sig.changes:,} changes)"
    if not sig.leaks:
        return Finding(
            "repeat_signature", OK, f"no item pair's adjacent answers agree like copies; {base}", [], numbers
        )
    parts = []
    if sig.mixed:
        rates = [p.agreement for pair in sig.mixed for p in pair]
        parts.append(
            f"{len(sig.mixed)} item pairs in both orders ({2 * len(sig.mixed)} ordered pairs) "
            f"agree {min(rates):.1%}-{max(rates):.1%}"
        )
    if sig.fixed:
        parts.append(
            f"{len(sig.fixed)} ordered pairs in one order agree "
            f"{min(p.agreement for p in sig.fixed):.1%}-{max(p.agreement for p in sig.fixed):.1%}"
        )
    summary = (
        f"{'; '.join(parts)}, against a {base}; {sig.flagged_positions:,} positions flagged "
        f"({sig.flagged_fraction:.2%} of answers)"
    )
    shown = [
        f"{ab.first}->{ab.second} {ab.count:,} times, agree {ab.agreement:.1%}; "
        f"{ba.first}->{ba.second} {ba.count:,} times, agree {ba.agreement:.1%}"
        for ab, ba in sig.mixed[:examples]
    ]
    shown += [
        f"{p.first}->{p.second} {p.count:,} times, agree {p.agreement:.1%} ({p.both_wrong} both wrong)"
        for p in sig.fixed[:examples]
    ]
    return Finding("repeat_signature", LEAK, summary, shown, numbers)


class _Rows:
    """A CSV's raw rows (fields as written, rows of any length) and its columns by name."""

    def __init__(self, text: str) -> None:
        lines = csv.reader(io.StringIO(text))
        self.column = {name: k for k, name in enumerate(next(lines, []))}
        self.rows: list[tuple[str, ...]] = []
        self.line: list[int] = []  # each row's line number in the file
        for fields in lines:
            if fields:
                self.rows.append(tuple(fields))
                self.line.append(lines.line_num)

    def get(self, row: tuple[str, ...], name: str) -> str:
        k = self.column[name]
        return row[k].strip() if k < len(row) else ""


def _order_id_repeats(csv_rows: _Rows, examples: int) -> Finding:
    rows, get = csv_rows.rows, csv_rows.get
    by_order: dict[str, list[int]] = defaultdict(list)
    for k, row in enumerate(rows):
        by_order[get(row, "order_id")].append(k)
    shared = {o: ks for o, ks in by_order.items() if len({_clean_id(get(rows[k], "skill_id")) for k in ks}) > 1}
    extra = sum(len(ks) - 1 for ks in shared.values())
    numbers = {"order_ids": len(shared), "extra_rows": extra}
    if not shared:
        return Finding("multi_skill_rows", OK, "no order_id spans rows of different skills", [], numbers)
    shown = []
    for order, ks in list(shared.items())[:examples]:
        first = rows[ks[0]]
        skills = sorted({_clean_id(get(rows[k], "skill_id")) for k in ks} - {""}, key=id_sort_key)
        shown.append(
            f"order_id {order} (user {get(first, 'user_id')}, problem {_clean_id(get(first, 'problem_id'))}): "
            f"{len(ks)} rows, skills {', '.join(skills)} (lines {', '.join(str(csv_rows.line[k]) for k in ks)})"
        )
    summary = (
        f"{len(shared):,} answers on multi-skill problems span {len(shared) + extra:,} rows ({extra:,} extra rows); "
        "stream-kt's reader keeps one answer per order_id (its skills joined, '10_23'), so they do not leak here, "
        "but a reader taking one row per answer would see each such answer before its copies"
    )
    return Finding("multi_skill_rows", NOTE, summary, shown, numbers)


def _duplicate_rows(csv_rows: _Rows, examples: int) -> Finding:
    seen: dict[tuple[str, ...], int] = {}
    copies = []
    for k, row in enumerate(csv_rows.rows):
        if row in seen:
            copies.append((seen[row], k))
        else:
            seen[row] = k
    numbers = {"rows": len(copies)}
    if not copies:
        return Finding("duplicate_rows", OK, "no row repeats another exactly", [], numbers)
    shown = [f"line {csv_rows.line[k]} repeats line {csv_rows.line[first]}" for first, k in copies[:examples]]
    return Finding(
        "duplicate_rows",
        WARN,
        f"{len(copies):,} rows repeat an earlier row exactly (stream-kt's reader merges them by order_id)",
        shown,
        numbers,
    )


def _duplicate_students(students: list[StudentSequence], min_length: int, examples: int) -> Finding:
    """Students whose items and answers repeat an earlier student's; short or one-label ones
    are often alike by chance."""
    first: dict[tuple, str] = {}
    copies = []
    for s in students:
        if len(s) < min_length:
            continue
        key = (s.items, s.correct)
        if key in first:
            copies.append((first[key], s))
        else:
            first[key] = s.student_id
    unlikely = [(original, s) for original, s in copies if len(s) >= DUPLICATE_LENGTH and len(set(s.correct)) == 2]
    numbers = {"students": len(copies), "answers": sum(len(s) for _, s in copies), "unlikely_by_chance": len(unlikely)}
    if not copies:
        return Finding(
            "duplicate_students",
            OK,
            f"no student of {min_length}+ answers repeats another's items and answers exactly",
            [],
            numbers,
        )
    shown = [
        f"{s.student_id} repeats {original} ({len(s)} answers)"
        for original, s in sorted(copies, key=lambda c: -len(c[1]))[:examples]
    ]
    summary = (
        f"{len(copies):,} students of {min_length}+ answers repeat an earlier student's items and answers exactly "
        f"({numbers['answers']:,} answers); {len(unlikely):,} of them have {DUPLICATE_LENGTH}+ answers, "
        "right and wrong, unlikely to be alike by chance"
    )
    return Finding("duplicate_students", WARN if unlikely else NOTE, summary, shown, numbers)


def _same_item_twice(students: list[StudentSequence], rule: RepeatRule) -> Finding:
    """Runs of one item: usual practice on a skill; on a problem vocabulary, answers agreeing
    like copies are a repeat."""
    count = agree = 0
    for s in students:
        for a, b, x, y in zip(s.items, s.items[1:], s.correct, s.correct[1:]):
            if a == b:
                count += 1
                agree += x == y
    answers = sum(len(s) for s in students)
    rate = agree / count if count else 0.0
    numbers = {"positions": count, "fraction": round(count / answers, 4), "agreement": round(rate, 4)}
    summary = (
        f"{count:,} answers ({count / answers:.1%}) follow an answer on the same item; their answers agree {rate:.1%}"
    )
    if count >= rule.min_count and rate >= rule.copy_agreement:
        return Finding(
            "same_item_twice",
            WARN,
            summary
            + ": like copies of one answer (expected on a problem vocabulary only if problems are answered once)",
            [],
            numbers,
        )
    return Finding("same_item_twice", NOTE, summary + f" (copies would agree {rule.copy_agreement:.0%}+)", [], numbers)


def _csv_order(csv_rows: _Rows, examples: int) -> Finding:
    last: dict[str, int] = {}
    backwards: dict[str, int] = {}
    for row in csv_rows.rows:
        user = csv_rows.get(row, "user_id")
        try:
            order = int(csv_rows.get(row, "order_id"))
        except ValueError:
            continue
        if user in last and order < last[user]:
            backwards[user] = backwards.get(user, 0) + 1
        last[user] = max(order, last.get(user, order))
    numbers = {"students": len(backwards), "rows": sum(backwards.values())}
    if not backwards:
        return Finding("time_order", OK, "order ids never decrease within a student in file order", [], numbers)
    shown = [f"user {u}: {n} rows after a later order_id" for u, n in list(backwards.items())[:examples]]
    return Finding(
        "time_order",
        NOTE,
        f"{len(backwards):,} students have rows out of order_id order ({numbers['rows']:,} rows); "
        "stream-kt's reader sorts each student by order_id",
        shown,
        numbers,
    )


def _sorted_items(students: list[StudentSequence], examples: int) -> Finding:
    """A time-ordered file rarely has every student's item ids non-decreasing; a file sorted by item does."""
    eligible = [s for s in students if len(set(s.items)) >= 3]
    keys = lambda s: [id_sort_key(i) for i in s.items]
    ascending = [s for s in eligible if all(a <= b for a, b in zip(keys(s), keys(s)[1:]))]
    share = len(ascending) / len(eligible) if eligible else 0.0
    numbers = {"students": len(ascending), "of": len(eligible), "fraction": round(share, 4)}
    what = (
        f"{len(ascending):,} of {len(eligible):,} students with 3+ distinct items ({share:.1%}) "
        "have item ids that never decrease"
    )
    shown = [
        f"{s.student_id}: {len(s)} answers on items {', '.join(dict.fromkeys(s.items))} in that order"
        for s in ascending[:examples]
    ]
    if eligible and share >= 0.5:
        return Finding("time_order", WARN, what + ": the file looks sorted by item, not by time", shown, numbers)
    return Finding(
        "time_order", NOTE, what + " (no timestamps to check; no sign of a file sorted by item)", shown, numbers
    )


def _short_students(students: list[StudentSequence], min_length: int, examples: int) -> Finding:
    short = [s for s in students if len(s) < min_length]
    numbers = {
        "students": len(short),
        "fraction": round(len(short) / len(students), 4),
        "answers": sum(len(s) for s in short),
        "min_length": min_length,
    }
    if not short:
        return Finding("short_students", OK, f"every student has {min_length}+ answers", [], numbers)
    shown = [f"{s.student_id}: {len(s)} answer{'s' if len(s) > 1 else ''}" for s in short[:examples]]
    return Finding(
        "short_students",
        NOTE,
        f"{len(short):,} students ({len(short) / len(students):.1%}) have fewer than {min_length} answers "
        f"({numbers['answers']:,} answers)",
        shown,
        numbers,
    )


def _constant_labels(students: list[StudentSequence], examples: int) -> Finding:
    right = [s for s in students if all(s.correct)]
    wrong = [s for s in students if not any(s.correct)]
    answers = sum(len(s) for s in students)
    correct = sum(sum(s.correct) for s in students)
    numbers = {"all_correct": len(right), "all_wrong": len(wrong), "answers": sum(len(s) for s in right + wrong)}
    if correct in (0, answers):
        return Finding(
            "constant_labels",
            WARN,
            f"every answer is {'correct' if correct else 'wrong'}: AUC is undefined on this file",
            [],
            numbers,
        )
    if not right and not wrong:
        return Finding("constant_labels", OK, "every student has right and wrong answers", [], numbers)
    summary = (
        f"{len(right):,} students answer all correct, {len(wrong):,} all wrong ({numbers['answers']:,} answers, "
        f"{numbers['answers'] / answers:.1%})"
    )
    shown = [
        f"{s.student_id}: {len(s)} answers, all {'correct' if s.correct[0] else 'wrong'}"
        for s in sorted(right + wrong, key=len, reverse=True)[:examples]
    ]
    return Finding("constant_labels", NOTE, summary, shown, numbers)
