"""The demo end to end, as a user runs it: a subprocess with the real broker, Redis and serve."""

from __future__ import annotations

import json
import subprocess
import sys

import redis


def test_demo_answers_every_event_and_exits_0(redis_url, tmp_path) -> None:
    command = [
        sys.executable, "-m", "stream_kt.cli", "demo",
        "--train-students", "40", "--epochs", "1", "--students", "6",
        "--redis", redis_url, "--out", str(tmp_path / "demo"), "--delete-state", "--json", "--seed", "3",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["all_answered"] is True
    assert report["students"] == 6 and report["sent"] > 0
    assert (report["outputs"], report["missing"], report["dead_lettered"]) == (report["sent"], 0, 0)
    assert report["p50_ms"] is not None and report["events_per_s"] > 0
    assert f"all {report['sent']} events answered." in result.stderr
    assert "mastery, P(correct) on each skill next, strongest first:" in result.stderr
    assert (tmp_path / "demo" / "checkpoint" / "weights.pt").is_file()
    # --delete-state: nothing of the demo is left in the shared Redis
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(f"{report['key_prefix']}:*")) == []
    client.close()
