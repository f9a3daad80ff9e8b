"""Export the answers the brokers still retain as a training file (``stream-kt export``).

Every partition of the input topic is read from its first retained offset to its end
offset when the export starts (``kafka_io.read_to_end``), so the command ends however
busy the topic is.  Each record is decoded by the processor's own decoder
(``events.decode_answer``) with no vocabulary: any item id is accepted and kept raw,
and an event the processor would dead-letter for its form is skipped and counted by
reason.  An answer whose (student_id, event_id) came before is the same answer sent
again (a producer's retry, a replay) and is dropped: the processor applies records by
offset and does not compare event ids, so a model retrained on the export does not
learn an answer twice.  Events without ``event_id`` are all kept.  Then
``--since``/``--until`` keep answers with ``since <= ts < until``.

A student's answers stay in the order the processor applied them: Kafka offset order
within a partition.  (A student found on several partitions, after the topic gained
partitions, has each partition's answers in offset order, merged by ``ts``.)
"""

from __future__ import annotations

import asyncio
import heapq
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from stream_kt.data.readers import write_csv
from stream_kt.data.sequences import StudentSequence
from stream_kt.errors import ConfigError, DataError
from stream_kt.progress import progress_bar
from stream_kt.service import kafka_io
from stream_kt.service.events import AnswerEvent, decode_answer
from stream_kt.service.exceptions import InvalidEvent
from stream_kt.settings import MAX_EVENT_BYTES, StreamSettings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_ms(text: str, flag: str) -> int:
    """ms since epoch of ``text``: an integer (ms), an ISO-8601 date (UTC midnight) or date and time (UTC
    unless it has an offset)."""
    value = text.strip()
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time())
        else:
            moment = datetime.fromisoformat(value)  # "Z" included
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: expected an ISO-8601 date or time (2026-01-31, 2026-01-31T08:00:00Z) or ms since epoch"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)  # exact: no float rounding of the ms


@dataclass
class ExportTally:
    """What the export has read so far: the kept answers, per student in read order, and what it dropped."""

    since_ms: int | None = None
    until_ms: int | None = None
    max_event_bytes: int = MAX_EVENT_BYTES
    records: int = 0
    duplicates: int = 0
    outside: int = 0  # valid, not a duplicate, ts outside [since, until)
    invalid: Counter[str] = field(default_factory=Counter)  # reason -> count
    answers: dict[str, list[tuple[int, int, AnswerEvent]]] = field(
        default_factory=dict
    )  # student -> (partition, offset, event)
    _seen: set[tuple[str, str | int]] = field(default_factory=set, repr=False)

    def add(self, partition: int, offset: int, raw: bytes | None) -> None:
        """One record of ``partition``; a partition's records arrive in offset order."""
        self.records += 1
        try:
            event = decode_answer(raw, _any_item, self.max_event_bytes)
        except InvalidEvent as exc:
            self.invalid[exc.reason] += 1
            return
        if event.event_id is not None:
            key = (event.student_id, event.event_id)
            if key in self._seen:
                self.duplicates += 1
                return
            self._seen.add(key)
        if (self.since_ms is not None and event.ts_ms < self.since_ms) or (
            self.until_ms is not None and event.ts_ms >= self.until_ms
        ):
            self.outside += 1
            return
        self.answers.setdefault(event.student_id, []).append((partition, offset, event))

    @property
    def written(self) -> int:
        return sum(len(a) for a in self.answers.values())

    def students(self) -> list[StudentSequence]:
        """The kept answers as one sequence per student; students in the order of their first
        answer's (partition, offset)."""
        out = []
        for student, answers in sorted(self.answers.items(), key=lambda kv: min(a[:2] for a in kv[1])):
            events = [event for _, _, event in _in_applied_order(answers)]
            elapsed = tuple(e.elapsed_ms if e.elapsed_ms is not None else 0 for e in events)
            out.append(
                StudentSequence(
                    student_id=student,
                    items=tuple(e.item_id for e in events),
                    correct=tuple(e.correct for e in events),
                    ts_ms=tuple(e.ts_ms for e in events),
                    elapsed_ms=elapsed if any(e.elapsed_ms is not None for e in events) else None,
                )
            )
        return out


def _any_item(item_id: str) -> int:
    return 0  # no vocabulary: every item id is accepted, and kept raw


def _in_applied_order(answers: list[tuple[int, int, AnswerEvent]]) -> Iterable[tuple[int, int, AnswerEvent]]:
    by_partition: dict[int, list[tuple[int, int, AnswerEvent]]] = {}
    for answer in answers:
        by_partition.setdefault(answer[0], []).append(answer)
    if len(by_partition) == 1:
        return answers  # read in offset order
    return heapq.merge(*by_partition.values(), key=lambda a: a[2].ts_ms)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    answers: int
    students: int
    duplicates: int
    invalid: dict[str, int]
    outside: int
    partitions: int
    records: int

    def line(self) -> str:
        invalid = sum(self.invalid.values())
        reasons = (
            f" ({', '.join(f'{reason} {count}' for reason, count in sorted(self.invalid.items()))})" if invalid else ""
        )
        return (
            f"wrote {self.answers} answers of {self.students} students to {self.path}: "
            f"{self.records} records read from {self.partitions} partitions, {self.duplicates} duplicates dropped, "
            f"{invalid} invalid skipped{reasons}, {self.outside} outside --since/--until"
        )


async def export_answers(
    settings: StreamSettings,
    topic: str,
    out: str | Path,
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: bool = True,
) -> ExportResult:
    """Read ``topic`` to its end offsets, write the kept answers to ``out`` (the ``csv``
    format) and say what was kept."""
    tally = ExportTally(since_ms=since_ms, until_ms=until_ms, max_event_bytes=settings.max_event_bytes)
    bars: list = []  # made once the total is known

    def on_start(total: int) -> None:
        bars.append(
            progress_bar(
                total=total, desc="export", unit="record", unit_scale=True, disable=not progress, mininterval=0.5
            )
        )

    def on_records(partition: int, records: list) -> None:
        for record in records:
            tally.add(partition, record.offset, record.value)
        bars[0].update(len(records))

    try:
        read = await kafka_io.read_to_end(
            settings.bootstrap,
            topic,
            on_records,
            kafka_io.client_options(settings),
            on_start=on_start,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
    finally:
        for bar in bars:
            bar.close()
    students = tally.students()
    try:
        write_csv(students, out)
    except OSError as exc:
        raise DataError(f"{out}: cannot write ({exc.strerror})") from None
    return ExportResult(
        Path(out),
        tally.written,
        len(students),
        tally.duplicates,
        dict(tally.invalid),
        tally.outside,
        len(read),
        tally.records,
    )


def run_export(
    settings: StreamSettings,
    topic: str,
    out: str | Path,
    since_ms: int | None,
    until_ms: int | None,
    progress: bool = True,
) -> ExportResult:
    return asyncio.run(export_answers(settings, topic, out, since_ms, until_ms, progress))
