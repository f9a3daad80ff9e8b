"""export: the answers a topic retains, as a file train reads (real Apache Kafka)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgpack
import pytest

from stream_kt.cli import main
from stream_kt.data.readers import read_dataset
from stream_kt.service import kafka_io
from stream_kt.service.events import encode_answer
from stream_kt.tools.brokers import free_port
from stream_kt.tools.export import ExportTally, parse_time_ms
from stream_kt.training.prepare import detect_format, load_students

JAN = parse_time_ms("2026-01-01", "--since")  # 1767225600000
FEB = parse_time_ms("2026-02-01T00:00:00Z", "--until")
DAY = 86_400_000


def produce(bootstrap: str, topic: str, messages: list[tuple[str, bytes | None]], partitions: int = 2) -> None:
    """Send (key, value) in order, each key to its murmur2 partition, as answer producers do."""

    async def run() -> None:
        await kafka_io.ensure_topics(bootstrap, [topic], partitions)
        producer = kafka_io.make_tool_producer(bootstrap, acks="all")
        await kafka_io.start(producer, bootstrap)
        try:
            for key, value in messages:
                await (await producer.send(topic, value, key=key.encode()))
        finally:
            await producer.stop()

    asyncio.run(run())


def answer(
    student: str | int,
    item: str | int,
    correct: int,
    ts: int,
    event_id: str | int | None = None,
    elapsed: int | None = None,
    field: str = "skill_id",
) -> tuple[str, bytes]:
    return str(student), encode_answer(student, item, correct, ts, event_id, field, elapsed)


def test_time_flags_read_iso_dates_times_and_ms() -> None:
    assert JAN == 1_767_225_600_000 and FEB == JAN + 31 * DAY
    assert parse_time_ms("2026-01-01T01:00:00+01:00", "--since") == JAN
    assert parse_time_ms("2026-01-01T00:00:01", "--since") == JAN + 1000  # no offset: UTC
    assert parse_time_ms(str(JAN + 5), "--since") == JAN + 5
    assert parse_time_ms("2026-01-01T00:00:00.123Z", "--since") == JAN + 123  # exact ms, no float rounding
    assert parse_time_ms("1969-12-31T23:59:59.999Z", "--since") == -1


def test_the_tally_dedups_per_student_skips_invalid_events_and_filters_on_ts() -> None:
    tally = ExportTally(since_ms=JAN, until_ms=FEB)
    tally.add(0, 0, answer("a", "x", 1, JAN, "e1")[1])
    tally.add(0, 1, answer("a", "y", 0, JAN + 1, "e1")[1])  # the same answer again (another ts): dropped
    tally.add(0, 2, answer("b", "y", 0, JAN + 2, "e1")[1])  # another student's e1: kept
    tally.add(0, 3, answer("b", "z", 1, FEB, "e2")[1])  # until is exclusive
    tally.add(0, 4, b"\xc1")
    tally.add(0, 5, None)
    students = tally.students()
    assert [(s.student_id, s.items, s.correct, s.ts_ms) for s in students] == [
        ("a", ("x",), (1,), (JAN,)),
        ("b", ("y",), (0,), (JAN + 2,)),
    ]
    assert (tally.records, tally.duplicates, tally.outside, dict(tally.invalid)) == (6, 1, 1, {"not_msgpack": 2})


def test_export_writes_what_serve_would_apply_and_train_reads_it(broker, topics, tmp_path: Path, capsys) -> None:
    topic = topics("answers")
    t = JAN + DAY
    messages = [
        answer("alice", "s1", 1, t, "a1", elapsed=1200),
        answer("alice", "s2", 0, t + 5_000, "a2"),
        answer("alice", "s1", 0, t + 6_000, "a1", elapsed=999),  # a1 again: the same answer, dropped
        answer("alice", "s3", 1, t - 60_000, "a3", elapsed=3000),  # ts goes back: offset order is kept
        answer("alice", "s3", 1, t + 7_000),  # no event_id: never a duplicate
        answer("alice", "s3", 1, t + 7_000),
        answer("bob", "s2", 1, JAN - 1, "b0"),  # before --since
        answer("bob", "s2", 1, JAN, "b1"),  # since is inclusive
        answer("bob", " s9 ", 0, t, "a1"),  # alice's event_id, bob's answer: kept; the id is stripped as serve does
        answer("bob", "s1", 1, FEB, "b3"),  # --until is exclusive
        answer(42, 7, 1, t, 1, elapsed=0, field="item_id"),  # integer ids, the item_id field
        ("carol", msgpack.packb({"student_id": "carol", "skill_id": "s1", "correct": 2, "ts": t})),  # bad_correct
        ("carol", msgpack.packb({"student_id": "carol", "skill_id": "s1", "correct": 1})),  # missing_field
        ("carol", b"not msgpack \xc1"),  # not_msgpack
        ("carol", None),  # a tombstone: not_msgpack
        ("dave", msgpack.packb([1, 2])),  # not_a_map
    ]
    produce(broker.bootstrap, topic, messages)
    out = tmp_path / "answers.csv"
    status = main(
        [
            "export",
            "--topic",
            topic,
            "--out",
            str(out),
            "--since",
            "2026-01-01",
            "--until",
            "2026-02-01T00:00:00Z",
            "--bootstrap",
            broker.bootstrap,
            "--json",
        ]
    )
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert report == {
        "out": str(out),
        "answers": 8,
        "students": 3,
        "duplicates": 1,
        "invalid": 5,
        "invalid_reasons": {"bad_correct": 1, "missing_field": 1, "not_msgpack": 2, "not_a_map": 1},
        "outside": 2,
        "partitions": 2,
        "records": len(messages),
    }
    assert (
        lines[0].startswith("wrote 8 answers of 3 students to ")
        and "1 duplicates dropped, 5 invalid skipped" in lines[0]
    )

    assert detect_format(out) == "csv"
    students, _ = read_dataset(out, "csv")
    got = {s.student_id: (s.items, s.correct, s.ts_ms, s.elapsed_ms) for s in students}
    assert got == {
        "alice": (
            ("s1", "s2", "s3", "s3", "s3"),
            (1, 0, 1, 1, 1),
            (t, t + 5_000, t - 60_000, t + 7_000, t + 7_000),
            (1200, 0, 3000, 0, 0),
        ),
        "bob": (("s2", "s9"), (1, 0), (JAN, t), None),
        "42": (("7",), (1,), (t,), (0,)),
    }

    # a second export of the same retained answers writes the same file
    again = tmp_path / "again.csv"
    assert (
        main(
            [
                "export",
                "--topic",
                topic,
                "--out",
                str(again),
                "--since",
                str(JAN),
                "--until",
                str(FEB),
                "--bootstrap",
                broker.bootstrap,
            ]
        )
        == 0
    )
    assert again.read_text() == out.read_text()


def test_replayed_twice_exports_once_and_trains(broker, topics, tmp_path: Path, capsys) -> None:
    data = tmp_path / "synth.csv"
    assert (
        main(
            [
                "synth",
                "--out",
                str(data),
                "--students",
                "24",
                "--items",
                "8",
                "--concepts",
                "2",
                "--format",
                "assistments",
            ]
        )
        == 0
    )
    topic = topics("answers")
    for _ in range(2):  # the same answers sent twice, with the same event ids ("<student>#<position>")
        assert (
            main(
                [
                    "replay",
                    "--data",
                    str(data),
                    "--bootstrap",
                    broker.bootstrap,
                    "--in-topic",
                    topic,
                    "--partitions",
                    "3",
                ]
            )
            == 0
        )
    out = tmp_path / "export.csv"
    assert main(["export", "--topic", topic, "--out", str(out), "--bootstrap", broker.bootstrap, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    source = {s.student_id: s for s in load_students(data)}
    total = sum(len(s) for s in source.values())
    assert (report["answers"], report["students"], report["duplicates"], report["invalid"], report["partitions"]) == (
        total,
        24,
        total,
        0,
        3,
    )
    exported = {s.student_id: s for s in load_students(out)}
    assert {k: (s.items, s.correct, s.elapsed_ms) for k, s in exported.items()} == {
        k: (s.items, s.correct, s.elapsed_ms) for k, s in source.items()
    }

    checkpoint = tmp_path / "model"
    assert main(["train", "--data", str(out), "--format", "csv", "--epochs", "1", "--out", str(checkpoint)]) == 0
    assert (checkpoint / "vocab.json").is_file()


def test_export_of_a_missing_topic_is_one_line(broker, topics, tmp_path: Path, capsys) -> None:
    missing = topics("missing")
    assert main(["export", "--topic", missing, "--out", str(tmp_path / "x.csv"), "--bootstrap", broker.bootstrap]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"stream-kt export: error: no topic {missing!r} on {broker.bootstrap}"
    ]
    assert not (tmp_path / "x.csv").exists()


def test_export_from_an_unreachable_broker_is_one_line(tmp_path: Path, capfd) -> None:
    assert main(["export", "--out", str(tmp_path / "x.csv"), "--bootstrap", f"127.0.0.1:{free_port()}"]) == 2
    err = [line for line in capfd.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("stream-kt export: error: cannot reach Kafka at 127.0.0.1:"), err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "yesterday"], "--since 'yesterday': expected an ISO-8601 date or time"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "--since 2026-02-01 is not before --until 2026-01-01"),
        (["--out", "/no/such/dir/x.csv"], "--out /no/such/dir/x.csv: directory /no/such/dir does not exist"),
    ],
)
def test_bad_export_arguments_are_one_line_before_any_connection(args, message, tmp_path: Path, capsys) -> None:
    base = {"--out": str(tmp_path / "x.csv"), "--bootstrap": "127.0.0.1:1"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    assert main(["export", *[part for pair in base.items() for part in pair]]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"stream-kt export: error: {message}"), line
