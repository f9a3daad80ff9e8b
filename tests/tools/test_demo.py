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


def test_demo_with_redis_unreachable_at_its_default_starts_its_own_and_stops_it(tmp_path) -> None:
    """REDIS_URL names a port nothing listens on: the demo starts a redis-server of its own, uses it, stops it on exit."""
    import os
    import shutil

    import pytest

    from stream_kt.tools.brokers import free_port

    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    command = [sys.executable, "-m", "stream_kt.cli", "demo", "--train-students", "40", "--epochs", "1", "--students", "4", "--out", str(tmp_path / "demo"), "--json", "--seed", "4"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["all_answered"] is True and report["redis"] != env["REDIS_URL"]
    assert "(started for this demo; stops on exit)" in result.stderr
    own_port = int(report["redis"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.ConnectionError):  # stopped: nothing answers on its port any more
        redis.Redis(port=own_port, socket_connect_timeout=1).ping()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"redis-server 127.0.0.1:{own_port}" not in ps and f"--port {own_port}" not in ps
