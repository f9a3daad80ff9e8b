"""replay: the pure send order, the token bucket, and the events it really sends (real broker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from pathlib import Path

import msgpack
import pytest

from stream_kt.cli import main
from stream_kt.data.sequences import StudentSequence
from stream_kt.service.exceptions import StreamError
from stream_kt.tools.brokers import free_port
from stream_kt.tools.replay import TokenBucket, event_order, load_replay_students
from stream_kt.tools.traffic import TopicReader


def student(student_id: str, length: int, ts_ms: tuple[int, ...] | None = None) -> StudentSequence:
    return StudentSequence(
        student_id, tuple(str(i % 4) for i in range(length)), tuple(i % 2 for i in range(length)), ts_ms=ts_ms
    )


def per_student_positions(order: list[tuple[int, int]]) -> dict[int, list[int]]:
    positions: dict[int, list[int]] = defaultdict(list)
    for index, position in order:
        positions[index].append(position)
    return positions


# ---------------------------------------------------------------- event_order (pure)


def test_seeded_interleaving_is_deterministic_keeps_each_students_order_and_depends_on_the_seed() -> None:
    students = [student(f"s{k}", length) for k, length in enumerate([5, 1, 12, 7, 30])]
    order = event_order(students, seed=3)
    assert order == event_order(students, seed=3)
    assert len(order) == sum(len(s) for s in students)
    assert per_student_positions(order) == {k: list(range(len(s))) for k, s in enumerate(students)}
    assert order != event_order(students, seed=4)
    assert per_student_positions(event_order(students, seed=4)) == per_student_positions(order)
    # interleaved, not one student after another
    assert [index for index, _ in order] != sorted(index for index, _ in order)


def test_timestamps_order_events_across_students_and_ignore_the_seed() -> None:
    students = [
        student("a", 3, ts_ms=(10, 20, 30)),
        student("b", 3, ts_ms=(5, 25, 26)),
        student("c", 2, ts_ms=(20, 40)),  # ties at 20 with "a": lower student index first
    ]
    expected = [(1, 0), (0, 0), (0, 1), (2, 0), (1, 1), (1, 2), (0, 2), (2, 1)]
    assert event_order(students, seed=0) == expected
    assert event_order(students, seed=99) == expected


def test_a_student_whose_timestamps_go_backwards_still_keeps_its_order() -> None:
    students = [student("a", 3, ts_ms=(30, 10, 20)), student("b", 2, ts_ms=(15, 25))]
    assert per_student_positions(event_order(students, seed=0)) == {0: [0, 1, 2], 1: [0, 1]}


def test_token_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=100, capacity=10, clock=lambda: now[0])
    assert bucket.wait_s(10) == 0.0  # the full burst is free
    assert bucket.wait_s(5) == pytest.approx(0.05)  # 5 tokens at 100/s
    now[0] = 0.05
    assert bucket.wait_s(5) == pytest.approx(0.05)  # the debt was paid by the wait; 5 more take 50 ms
    now[0] = 10.0
    assert bucket.wait_s(10) == 0.0  # refills only up to capacity


# ---------------------------------------------------------------- the replay command (real broker)


def write_3line(path: Path, students: list[tuple[list[str], list[int]]]) -> Path:
    path.write_text(
        "".join(f"{len(items)}\n{','.join(items)}\n{','.join(map(str, correct))}\n" for items, correct in students)
    )
    return path


def consume_all(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0) -> list:
    async def run() -> list:
        async with TopicReader(bootstrap, topic) as reader:
            with contextlib.suppress(StreamError):  # fewer than ``count``: the test's assertions say what is missing
                await reader.read_until(lambda records: len(records) >= count, timeout_s)
            await reader.read(timeout_ms=300)  # a short extra poll: anything beyond ``count`` would be a bug
            return reader.records

    return asyncio.run(run())


@pytest.fixture
def two_files(tmp_path: Path) -> list[Path]:
    train = write_3line(
        tmp_path / "train.txt",
        [(["1", "2", "3"], [1, 0, 1]), (["4", "4"], [0, 1]), (["2", "1", "2", "3", "4"], [1, 1, 0, 0, 1])],
    )
    test = write_3line(tmp_path / "test.txt", [(["3", "3", "1"], [0, 0, 1])])
    return [train, test]


@pytest.mark.brokers("kafka", "tansu")
def test_replay_sends_exactly_the_data_as_answer_events_in_the_planned_order(broker, topics, two_files, capsys) -> None:
    topic = topics("answers")
    before_ms = time.time_ns() // 1_000_000
    status = main(
        [
            "replay",
            "--data",
            str(two_files[0]),
            "--data",
            str(two_files[1]),
            "--seed",
            "7",
            "--bootstrap",
            broker.bootstrap,
            "--in-topic",
            topic,
            "--partitions",
            "1",
            "--json",
        ]
    )
    assert status == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("sent 13 events (4 students) in ")
    assert json.loads(out[-1])["sent"] == 13

    records = consume_all(broker.bootstrap, topic, 13)
    events = [msgpack.unpackb(r.value, raw=False) for r in records]
    assert len(events) == 13
    # one partition: the topic holds the events in send order, which is event_order's
    students = load_replay_students(two_files)
    expected = []
    for index, position in event_order(students, seed=7):
        s = students[index]
        expected.append(
            {
                "v": 1,
                "student_id": s.student_id,
                "skill_id": s.items[position],
                "correct": s.correct[position],
                "event_id": f"{s.student_id}#{position}",
            }
        )
    assert [{k: e[k] for k in ("v", "student_id", "skill_id", "correct", "event_id")} for e in events] == expected
    assert {e["student_id"] for e in events} == {
        "train:0",
        "train:1",
        "train:2",
        "test:0",
    }  # ids stay distinct across files
    assert [r.key.decode() for r in records] == [e["student_id"] for e in events]
    after_ms = time.time_ns() // 1_000_000
    assert all(before_ms <= e["ts"] <= after_ms for e in events)  # wall clock at send time
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_replay_limit_item_field_and_rate(broker, topics, two_files, capsys) -> None:
    topic = topics("answers")
    status = main(
        [
            "replay",
            "--data",
            str(two_files[0]),
            "--limit",
            "4",
            "--item",
            "problem_id",
            "--rate",
            "200",
            "--bootstrap",
            broker.bootstrap,
            "--in-topic",
            topic,
            "--json",
        ]
    )
    assert status == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["sent"] == 4
    events = [msgpack.unpackb(r.value, raw=False) for r in consume_all(broker.bootstrap, topic, 4)]
    assert len(events) == 4
    assert all("item_id" in e and "skill_id" not in e for e in events)


def test_replay_of_the_same_file_twice_is_one_line_error(tmp_path, two_files, capsys) -> None:
    status = main(["replay", "--data", str(two_files[0]), "--data", str(two_files[0]), "--bootstrap", "127.0.0.1:1"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in both" in err[0]


def test_replay_to_an_unreachable_broker_is_one_line_error(two_files, capsys) -> None:
    status = main(["replay", "--data", str(two_files[0]), "--bootstrap", f"127.0.0.1:{free_port()}"])
    assert status == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert err == [err[0]] and "cannot reach Kafka" in err[0]
