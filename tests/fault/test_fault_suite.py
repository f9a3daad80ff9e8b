"""``scripts/fault-suite --short`` on Apache Kafka: kills, rebalances, a Redis outage, a broker
SIGKILL and poison lose nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_kafka

pytestmark = pytest.mark.slow  # the fault suite's short run: minutes

SUITE = Path(__file__).parents[2] / "scripts" / "fault-suite"


@pytest.fixture(scope="module")
def short_run() -> dict:
    if shutil.which("redis-server") is None:
        pytest.skip("the fault suite needs a redis-server binary")
    require_kafka()
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(SUITE), "--short", "--json", "--no-progress"], capture_output=True, text=True, env=env, timeout=240
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output (exit {done.returncode}); stderr: {done.stderr[-3000:]}"
    result = json.loads(lines[-1])
    if "faults" not in result:  # the hard deadline or an interrupt: a short line with only the failures
        pytest.fail(f"fault suite: {result['failures']} (exit {done.returncode}); stderr: {done.stderr[-3000:]}")
    result["exit_code"] = done.returncode
    result["stderr"] = done.stderr[-3000:]
    return result


@pytest.mark.timeout(300)
def test_nothing_is_lost_or_applied_twice(short_run):
    r = short_run
    assert r["ok"] and r["exit_code"] == 0, f"{r['failures']}\n{r['stderr']}"
    assert r["state_mismatches"] == 0 and r["lost"] == 0
    assert r["output_mismatches"] == 0 and r["unexpected_outputs"] == 0
    assert r["outputs"] >= r["valid_events"] > 0  # repeats after a crash are allowed, gaps are not
    assert r["unique_outputs"] == r["valid_events"] + r["fuzz_answered"]
    assert r["outputs"] - r["duplicates_dropped"] == r["unique_outputs"]
    assert r["events_in"] == r["valid_events"] + r["poison_events"] + r["fuzz_events"]


@pytest.mark.timeout(300)
def test_every_poison_event_is_dead_lettered_with_its_reason(short_run):
    r = short_run
    assert r["dlq"] == r["poison_events"] + r["fuzz_dead_lettered"] and r["poison_events"] > 0
    assert r["poison_missing"] == 0 and r["poison_wrong_reason"] == 0
    assert sum(r["poison_by_reason"].values()) == r["poison_events"]
    assert set(r["poison_by_reason"]) == {
        "not_msgpack",
        "not_a_map",
        "bad_version",
        "missing_field",
        "bad_type",
        "bad_correct",
        "out_of_range",
        "bad_skills",
        "unknown_item",
        "oversized",
    }
    assert (
        r["dlq_truncated"] >= 1
    )  # the 5 MB poison event: its dead letter is a prefix with its size and SHA-256 (checked)


@pytest.mark.timeout(300)
def test_every_fuzzed_event_is_answered_or_dead_lettered_as_the_decoder_says(short_run):
    r = short_run
    assert r["fuzz_events"] > 0 and r["fuzz_missing"] == 0
    assert r["fuzz_answered"] > 0 and r["fuzz_dead_lettered"] > 0
    assert r["fuzz_answered"] + r["fuzz_dead_lettered"] == r["fuzz_events"]
    assert sum(r["fuzz_by_reason"].values()) == r["fuzz_dead_lettered"]


@pytest.mark.timeout(300)
def test_every_fault_was_injected(short_run):
    f = short_run["faults"]
    assert f["processor_kills"] >= 1
    assert f["joins"] >= 1 and f["leaves_sigterm"] + f["leaves_sigkill"] >= 1
    assert f["redis_outages"] >= 1 and f["redis_outage_crashes"] == 0
    assert f["broker_restarts"] >= 1 and f["broker_kills"] == f["broker_restarts"]  # Kafka is always SIGKILLed
    assert (
        short_run["broker"] == "kafka" and short_run["broker_kills"] >= 1 and short_run["committed_matches_end"] is True
    )
    assert f["out_of_order_events"] > 0
