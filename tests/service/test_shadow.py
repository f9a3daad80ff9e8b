"""A shadow challenger (``serve --shadow``) and its promotion with warm states, on Apache Kafka."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import redis

from stream_kt.checkpoint import load_checkpoint
from stream_kt.cli import main
from stream_kt.service import keys
from stream_kt.service.events import decode_mastery
from stream_kt.service.metrics import Metrics
from stream_kt.service.processor import Processor

from .conftest import (
    TopicReader,
    answer_messages,
    assert_final_states,
    by_student,
    dedupe_outputs,
    expected_output_keys,
    produce,
    reference_run,
    running_processor,
    synthetic_answers,
    until,
)


def scored(metrics: Metrics, version: str) -> int:
    return metrics.quality[version].count if version in metrics.quality else 0


def test_promoting_the_shadow_uses_its_states_and_ends_where_serving_it_throughout_would(
    make_settings, tiny_checkpoint, checkpoint_factory, redis_url, capsys
):
    served, challenger = load_checkpoint(tiny_checkpoint), load_checkpoint(checkpoint_factory(seed=7))
    settings = make_settings()
    answers = synthetic_answers(served, students=12, seed=51, min_length=20, max_length=40)
    cut = {
        student: len(student_answers) // 2 for student, student_answers in by_student(answers).items()
    }  # each student's first half
    position: dict[str, int] = {}
    first, second = [], []
    for a in answers:
        position[a.student_id] = position.get(a.student_id, 0) + 1
        (first if position[a.student_id] <= cut[a.student_id] else second).append(a)
    before, after = Metrics(process_metrics=False), Metrics(process_metrics=False)

    async def scenario():
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            await produce(settings, answer_messages(first))
            async with running_processor(settings, served, metrics=before, shadow=challenger):  # A serves, B shadows
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(first), timeout_s=90)
                await until(lambda: before.events_in >= len(first), what="the first part committed")
            await produce(settings, answer_messages(second))
            async with running_processor(
                settings, challenger, metrics=after
            ):  # B promoted: a restart with B as the served model
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90)
                await until(lambda: after.events_in >= len(second), what="the second part committed")
        return out.records

    records = asyncio.run(scenario())
    seen = set(by_student(first))
    assert (
        len(seen) == 12 and after.warm_promotions == len(seen) and after.state_rebuilds == 0
    )  # every student the shadow saw: no rebuild
    assert before.state_rebuilds == 0  # the shadow started with the stream: nothing to rebuild either
    assert_final_states(redis_url, settings.key_prefix, challenger, answers)  # as if B had served from the start
    outputs = dedupe_outputs(records)
    for student, student_answers in by_student(
        answers
    ).items():  # the second part's outputs are B's, from B's own history
        expected = reference_run(challenger, student_answers)
        for seq in range(len([a for a in first if a.student_id == student]) + 1, len(student_answers) + 1):
            message = outputs[(student, seq)]
            assert message["model_version"] == challenger.version
            assert abs(message["p_correct"] - expected.p_correct[seq - 1]) < 1e-5
    # both versions were scored online, the shadow on the first part as the served model was
    capsys.readouterr()
    assert main(["quality", "--json", "--redis", settings.redis_url, "--key-prefix", settings.key_prefix]) == 0
    versions = json.loads(capsys.readouterr().out)["versions"]
    assert (
        versions[served.version]["count"]
        == scored(before, served.version)
        == scored(before, challenger.version)
        == len(first) - len(seen)
    )
    assert versions[challenger.version]["count"] == scored(before, challenger.version) + scored(
        after, challenger.version
    )


def test_the_shadow_topic_gets_the_challengers_outputs_and_forget_erases_shadow_states(
    make_settings, tiny_checkpoint, checkpoint_factory, topics, redis_url
):
    served, challenger = load_checkpoint(tiny_checkpoint), load_checkpoint(checkpoint_factory(seed=8))
    settings = make_settings(shadow_topic=topics("shadow"))
    answers = synthetic_answers(served, students=6, seed=52, min_length=10, max_length=20)

    async def scenario():
        await produce(settings, answer_messages(answers))
        async with (
            TopicReader(settings.bootstrap, settings.shadow_topic) as shadow_out,
            TopicReader(settings.bootstrap, settings.out_topic) as out,
        ):
            async with running_processor(settings, served, shadow=challenger):
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90)
                await shadow_out.read_until(
                    lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90
                )
        return out.records, shadow_out.records

    records, shadow_records = asyncio.run(scenario())
    assert {decode_mastery(r.value)["model_version"] for r in records} == {served.version}
    shadow_outputs = dedupe_outputs(shadow_records)
    for student, student_answers in by_student(answers).items():
        expected = reference_run(challenger, student_answers)
        got = [shadow_outputs[(student, seq)]["p_correct"] for seq in range(1, len(student_answers) + 1)]
        np.testing.assert_allclose(got, expected.p_correct, atol=1e-5)
    student = answers[0].student_id
    client = redis.Redis.from_url(redis_url)
    try:
        shadow_key = keys.shadow_key(student, challenger.version, settings.key_prefix)
        assert client.exists(shadow_key) and client.exists(keys.student_key(student, settings.key_prefix))
        assert main(["forget", student, "--redis", redis_url, "--key-prefix", settings.key_prefix]) == 0
        assert not client.exists(shadow_key) and not client.exists(keys.student_key(student, settings.key_prefix))
    finally:
        client.close()


def test_a_failing_shadow_never_stops_the_served_model(
    make_settings, tiny_checkpoint, checkpoint_factory, redis_url, monkeypatch
):
    served, challenger = load_checkpoint(tiny_checkpoint), load_checkpoint(checkpoint_factory(seed=9))
    settings = make_settings()
    answers = synthetic_answers(served, students=6, seed=53, min_length=10, max_length=20)
    metrics = Metrics(process_metrics=False)

    async def broken(self, events, tps):
        raise RuntimeError("the challenger has a bug")

    monkeypatch.setattr(Processor, "apply_shadow", broken)

    async def scenario():
        await produce(settings, answer_messages(answers))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, served, metrics=metrics, shadow=challenger):
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90)
                await until(lambda: metrics.events_in >= len(answers), what="every batch committed")
        return out.records

    records = asyncio.run(scenario())
    assert set(dedupe_outputs(records)) == expected_output_keys(answers)
    assert metrics.shadow_errors == metrics.batches > 0 and challenger.version not in metrics.quality
    assert_final_states(redis_url, settings.key_prefix, served, answers)
