"""``scripts/fault-suite --short --ha``: on a Redis primary, replica and three Sentinels and three Apache Kafka nodes,
one Redis failover (the replica cut off first, so the primary dies holding writes no replica has) and one SIGKILL of the
input partitions' leader, besides the processor kills, rebalances and poison of the short run: nothing lost, nothing
applied twice, with ``KT_REDIS_MIN_REPLICAS=1``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_suite.cli import parse_args
from stream_kt.tools.processes import SentinelGroup
from tests.conftest import require_kafka

SUITE = Path(__file__).parents[2] / "scripts" / "fault-suite"


@pytest.fixture(scope="module")
def ha_run() -> dict:
    reason = SentinelGroup.unavailable()
    if reason:
        pytest.skip(f"the fault suite's --ha needs Redis Sentinel: {reason}")
    require_kafka()
    env = {**os.environ, "PYTHON": sys.executable}
    started = time.monotonic()
    done = subprocess.run(
        [str(SUITE), "--short", "--ha", "--json", "--no-progress"], capture_output=True, text=True, env=env, timeout=360
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output (exit {done.returncode}); stderr: {done.stderr[-3000:]}"
    result = json.loads(lines[-1])
    if "faults" not in result:  # the hard deadline or an interrupt: a short line with only the failures
        pytest.fail(f"fault suite: {result['failures']} (exit {done.returncode}); stderr: {done.stderr[-3000:]}")
    result.update(exit_code=done.returncode, stderr=done.stderr[-3000:], wall_s=round(time.monotonic() - started))
    return result


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_redis_failover_and_a_kafka_leader_kill_lose_nothing(ha_run, capsys):
    r, f = ha_run, ha_run["faults"]
    with capsys.disabled():
        print(
            f"\nfault-suite --short --ha: {r['wall_s']} s; failover {f['redis_failover_s']} s, "
            f"leader kill answered after {f['kafka_leader_pause_s']} s"
        )
    assert r["ok"] and r["exit_code"] == 0, f"{r['failures']}\n{r['stderr']}"
    assert (r["ha"], r["kafka_nodes"], r["redis_min_replicas"]) == (True, 3, 1)
    assert r["redis_failovers"] == 1 and r["kafka_leader_kills"] == 1
    assert f["redis_failover_crashes"] == 0 and f["kafka_leader_kill_crashes"] == 0
    assert (
        len(f["redis_cut_off_s"]) == 1 and 0 < f["redis_cut_off_s"][0] <= 3.0
    )  # the primary died holding writes its replica never got
    assert r["state_mismatches"] == 0 and r["lost"] == 0
    assert r["output_mismatches"] == 0 and r["unexpected_outputs"] == 0
    assert r["outputs"] >= r["valid_events"] > 0  # repeats after a failover are allowed, gaps are not
    assert r["unique_outputs"] == r["valid_events"] + r["fuzz_answered"]
    assert r["poison_missing"] == 0 and r["fuzz_missing"] == 0
    assert r["committed_matches_end"] is True
    # the single servers' faults are the HA faults here; the processors' own still happen
    assert f["redis_outages"] == 0 and f["broker_restarts"] == 0
    assert f["processor_kills"] >= 1 and f["joins"] >= 1


def test_the_ha_arguments_are_checked(capsys):
    assert parse_args(["--ha"]).redis_min_replicas is None  # 1 once the suite runs
    assert parse_args(["--ha", "--redis-min-replicas", "0"]).redis_min_replicas == 0
    bad = {
        ("--redis-min-replicas", "1"): "--redis-min-replicas needs --ha",
        ("--ha", "--redis-min-replicas", "2"): "--redis-min-replicas must be 0 or 1 (--ha runs one replica), got 2",
        ("--ha", "--broker", "tansu"): "--ha needs --broker kafka",
    }
    for argv, message in bad.items():
        with pytest.raises(SystemExit) as exited:
            parse_args(list(argv))
        assert exited.value.code == 2
        assert f"fault-suite: error: {message}" in capsys.readouterr().err
