"""Online quality on Apache Kafka: the stream scores its own model; the numbers equal the offline ones."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from stream_kt.checkpoint import load_checkpoint
from stream_kt.cli import main
from stream_kt.prediction_metrics import binary_metrics
from stream_kt.service import http
from stream_kt.service.metrics import Metrics

from .conftest import (
    TopicReader,
    answer_messages,
    by_student,
    dedupe_outputs,
    expected_output_keys,
    produce,
    reference_run,
    running_processor,
    synthetic_answers,
    until,
    until_committed,
)


def offline_scores(checkpoint, answers) -> tuple[np.ndarray, np.ndarray]:
    """Every answer but each student's first, with the offline model's prediction made before it."""
    p, y = [], []
    for student_answers in by_student(answers).values():
        expected = reference_run(checkpoint, student_answers)
        p += expected.p_correct[1:]
        y += [a.correct for a in student_answers[1:]]
    return np.asarray(p), np.asarray(y)


def quality_json(settings, capsys) -> dict:
    capsys.readouterr()
    assert main(["quality", "--json", "--redis", settings.redis_url, "--key-prefix", settings.key_prefix]) == 0
    return json.loads(capsys.readouterr().out)["versions"]


def test_the_streams_online_quality_equals_the_offline_metrics_of_the_same_answers(
    make_settings, tiny_checkpoint, capsys
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings()
    answers = synthetic_answers(checkpoint, students=16, seed=41, min_length=30, max_length=60)
    metrics = Metrics(process_metrics=False)

    async def scenario():
        await produce(settings, answer_messages(answers))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, checkpoint, metrics=metrics):
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90)
                scored = len(answers) - len(
                    by_student(answers)
                )  # outputs go out before the batch is scored and committed
                await until(
                    lambda: (
                        checkpoint.version in metrics.quality and metrics.quality[checkpoint.version].count >= scored
                    ),
                    what="every answer scored",
                )
                status, kind, body = await http.ObservabilityServer(metrics, http.Readiness(), port=0).respond(
                    "GET", "/quality"
                )
        return status, kind, json.loads(body)

    status, kind, endpoint = asyncio.run(scenario())
    p, y = offline_scores(checkpoint, answers)
    offline = binary_metrics(y, p)
    fleet = quality_json(settings, capsys)[checkpoint.version]
    assert fleet["count"] == len(answers) - len(by_student(answers)) == len(y)
    assert abs(fleet["auc"] - offline["auc"]) <= min(0.002, fleet["auc_error_bound"] + 1e-5)
    assert (
        abs(fleet["logloss"] - offline["logloss"]) < 1e-5
        and abs(fleet["rmse"] - offline["rmse"]) < 1e-5
        and abs(fleet["accuracy"] - offline["acc"]) < 1e-3
    )
    assert status == 200 and kind == "application/json"
    mine = endpoint["versions"][checkpoint.version]
    assert mine["fleet"]["count"] == mine["process"]["run"]["count"] == mine["process"]["recent"]["count"] == len(y)
    assert (
        abs(mine["process"]["recent"]["auc"] - offline["auc"]) < 1e-5
    )  # the window is exact: it holds every answer here
    page = http.generate_latest(metrics.registry).decode()
    assert f'stream_kt_online_scored_total{{version="{checkpoint.version}"}} {float(len(y))}' in page


def test_two_processors_in_one_group_report_the_single_processors_figure(
    make_settings, tiny_checkpoint, topics, capsys
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    fleet_settings = make_settings()
    single_settings = fleet_settings.replace(
        group_id=topics("single"), key_prefix=f"{fleet_settings.key_prefix}-single"
    )
    answers = synthetic_answers(checkpoint, students=24, seed=42, min_length=20, max_length=40)
    both = [Metrics(process_metrics=False), Metrics(process_metrics=False)]

    async def scenario():
        async with TopicReader(fleet_settings.bootstrap, fleet_settings.out_topic) as out:
            await produce(fleet_settings, [])  # the topics, before either member joins
            async with (
                running_processor(fleet_settings, checkpoint, metrics=both[0]),
                running_processor(fleet_settings, checkpoint, metrics=both[1]),
            ):
                await produce(fleet_settings, answer_messages(answers))  # after both joined: each gets some partitions
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90)
            async with running_processor(single_settings, checkpoint):  # the same events, another group and prefix
                await until_committed(single_settings, len(answers), timeout_s=90)

    asyncio.run(scenario())
    fleet, single = (
        quality_json(fleet_settings, capsys)[checkpoint.version],
        quality_json(single_settings, capsys)[checkpoint.version],
    )
    assert all(m.quality[checkpoint.version].count > 0 for m in both)  # both members scored answers
    assert (
        sum(m.quality[checkpoint.version].count for m in both)
        == fleet["count"]
        == single["count"]
        == len(answers) - len(by_student(answers))
    )
    assert abs(fleet["auc"] - single["auc"]) < 1e-4 and abs(fleet["logloss"] - single["logloss"]) < 1e-5
