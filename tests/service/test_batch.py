"""The processor's pure middle (``batch.py``): records in, outputs and state blobs out, with no broker and no Redis."""

from __future__ import annotations

import ast
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from stream_kt.backends import make_backend
from stream_kt.checkpoint import Checkpoint, load_checkpoint
from stream_kt.service import batcher
from stream_kt.service.batch import Events, Record, Stepper, decode_batch, step_batch
from stream_kt.service.events import MasteryEncoder, decode_mastery, encode_answer
from stream_kt.service.migration import Migration
from stream_kt.service.processor import bucket_sizes
from stream_kt.service.state import StateLayout, source_hash

SOURCES = np.asarray([source_hash("in/0"), source_hash("in/1")], np.uint64)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Checkpoint:
    return load_checkpoint(tiny_checkpoint)


def headers(reason: str, detail: str, source: int, offset: int) -> list[tuple[str, bytes]]:
    return [("reason", reason.encode()), ("source", f"in/{source}/{offset}".encode())]


def machinery(checkpoint: Checkpoint, batch_size: int = 8) -> tuple[Stepper, Migration, MasteryEncoder]:
    backends = {size: make_backend("eager", checkpoint.model, size) for size in bucket_sizes(batch_size)}
    initial = {k: v[0].numpy().copy() for k, v in next(iter(backends.values())).initial_state(1).items()}
    layout = StateLayout(checkpoint.version, {k: v.shape for k, v in initial.items()}, len(checkpoint.vocab))
    return Stepper(backends, initial), Migration(layout, initial, checkpoint.vocab), MasteryEncoder(checkpoint.version)


def run(checkpoint: Checkpoint, events: Events, blobs: dict[str, bytes] | None = None, now_ms: int = 7):
    """Steps 3 (from ``blobs``, as read from a store), 4 and 5 over ``events``."""
    stepper, migration, encoder = machinery(checkpoint)
    codes, students = batcher.codes_of(events.students)
    stored = [(blobs or {}).get(s) for s in students]
    loaded = migration.rows(students, stored, {}, stepper)
    return step_batch(
        events, codes, students, loaded.rows, loaded.extras, SOURCES, stepper, encoder, lambda s: len(s) % 3, now_ms
    )


def test_decode_splits_a_batch_into_columns_and_dead_letters(checkpoint):
    records = [
        Record(0, 10, b"a", encode_answer("a", "3", 1, 1000, event_id="e1")),
        Record(1, 4, b"x", b"\xc1"),
        Record(1, 5, b"b", encode_answer("b", "99", 0, 1000)),
        Record(0, 11, b"a", encode_answer("a", "4", 0, 2000, elapsed_ms=30)),
        Record(0, 12, b"a", msgpack.packb({"student_id": "a", "skill_id": "1", "correct": 1, "ts": 2**64 - 1})),
    ]
    events, letters = decode_batch(records, {item: i for i, item in enumerate(checkpoint.vocab.ids)}, 4096, headers)
    assert events == Events(
        ["a", "a"], ["3", "4"], [3, 4], [1, 0], [1000, 2000], ["e1", None], [-1, 30], [0, 0], [10, 11], ["", ""], [0, 0]
    )
    assert [(d.reason, d.key, d.value) for d in letters] == [
        ("not_msgpack", b"x", b"\xc1"),
        ("unknown_item", b"b", records[2].value),
        ("out_of_range", b"a", records[4].value),
    ]
    assert [dict(d.headers)["source"] for d in letters] == [b"in/1/4", b"in/1/5", b"in/0/12"]


def test_step_batch_equals_the_model_run_offline_and_builds_outputs_and_blobs(checkpoint):
    answers = [("a", "3", 1), ("b", "5", 0), ("a", "4", 0), ("c", "3", 1), ("a", "3", 1), ("b", "2", 1)]
    events = Events(
        [s for s, _, _ in answers],
        [i for _, i, _ in answers],
        [int(i) for _, i, _ in answers],
        [c for _, _, c in answers],
        [1000 * k for k in range(len(answers))],
        [f"e{k}" for k in range(len(answers))],
        [-1] * len(answers),
        [0] * len(answers),
        list(range(len(answers))),
    )
    result = run(checkpoint, events, now_ms=1234)
    assert result.replays == []
    messages = [decode_mastery(v) for v in result.outputs.values]
    assert [(m["student_id"], m["seq"], m["event_id"], m["item_id"]) for m in messages] == [
        ("a", 1, "e0", "3"),
        ("b", 1, "e1", "5"),
        ("a", 2, "e2", "4"),
        ("c", 1, "e3", "3"),
        ("a", 3, "e4", "3"),
        ("b", 2, "e5", "2"),
    ]
    assert result.outputs.keys == [s.encode() for s, _, _ in answers] and result.outputs.partitions == [
        1,
        1,
        1,
        1,
        1,
        1,
    ]
    assert result.outputs.event_ts_ms == events.ts
    model = checkpoint.model.eval()
    for student in "abc":  # each student's outputs are the offline model's, step by step
        state = model.initial_state(1)
        for message, (s, item, correct) in zip(messages, answers):
            if s != student:
                continue
            with torch.no_grad():
                out = model.step(state, torch.tensor([int(item)]), torch.tensor([correct]))
            assert abs(message["p_correct"] - float(out.p_correct[0])) < 1e-5
            np.testing.assert_allclose(message["mastery"], out.mastery[0].numpy(), atol=1e-5)
            state = out.state
    assert result.writes.students == ["a", "b", "c"] and result.writes.events == [3, 2, 1]
    rows = np.frombuffer(b"".join(result.writes.blobs), machinery(checkpoint)[1].layout.dtype)
    assert rows["updated_ms"].tolist() == [1234] * 3 and rows["window_len"].tolist() == [3, 2, 1]


def test_a_flipped_answer_changes_the_next_prediction_not_its_own(checkpoint):
    def outputs(first_correct: int) -> list[dict]:
        events = Events(
            ["a", "a"], ["3", "4"], [3, 4], [first_correct, 1], [1, 2], [None, None], [-1, -1], [0, 0], [0, 1]
        )
        return [decode_mastery(v) for v in run(checkpoint, events).outputs.values]

    right, wrong = outputs(1), outputs(0)
    assert right[0]["p_correct"] == wrong[0]["p_correct"]  # made before the answer was seen
    assert right[1]["p_correct"] != wrong[1]["p_correct"]


def test_events_a_stored_state_applied_before_are_replays_and_change_nothing(checkpoint):
    first = Events(["a", "a"], ["3", "4"], [3, 4], [1, 0], [1, 2], [None, None], [-1, -1], [0, 0], [10, 11])
    stored = run(checkpoint, first)
    again = Events(
        ["a", "a", "a"], ["3", "4", "5"], [3, 4, 5], [1, 0, 1], [1, 2, 3], [None] * 3, [-1] * 3, [0, 0, 0], [10, 11, 12]
    )
    result = run(checkpoint, again, blobs={"a": stored.writes.blobs[0]})
    assert result.replays == [0, 1]
    assert [decode_mastery(v)["seq"] for v in result.outputs.values] == [3] and result.writes.events == [3]


def test_an_empty_batch_is_empty(checkpoint):
    result = run(checkpoint, Events())
    assert result.outputs.values == [] and result.writes.students == [] and result.replays == []


@pytest.mark.parametrize("module", ["batch", "migration", "batcher", "events", "state"])
def test_the_pure_modules_import_no_kafka_and_no_redis(module):
    tree = ast.parse((Path(__file__).parents[2] / "stream_kt" / "service" / f"{module}.py").read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {n for n in names if n.split(".")[0] in ("aiokafka", "redis", "confluent_kafka")}
    assert not {
        n
        for n in names
        if n in ("stream_kt.service.kafka_io", "stream_kt.service.redis_store", "stream_kt.service.processor")
    }
