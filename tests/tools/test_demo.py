"""The demo end to end, as a user runs it: a subprocess with the real broker, Redis and serve."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from stream_kt.commands.tools import follow_line, left_in_redis
from stream_kt.tools.inspect_state import count_keys_with_prefix


@pytest.mark.slow
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
    assert "event-to-mastery latency (event sent to its mastery received) p50" in result.stderr
    assert (
        report["online_scored"] == report["sent"] - report["students"] and 0.0 < report["online_auc"] < 1.0
    )  # every answer but each student's first
    assert f"online quality of what was served ({report['online_scored']:,} answers" in result.stderr
    assert "\r" not in result.stderr  # not a terminal: progress comes as plain lines, not a redrawn bar
    assert (tmp_path / "demo" / "checkpoint" / "weights.pt").is_file()
    # --delete-state: nothing of the demo is left in the shared Redis
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(f"{report['key_prefix']}:*")) == []
    client.close()


@pytest.mark.slow
def test_demo_with_redis_unreachable_at_its_default_starts_its_own_and_stops_it(tmp_path) -> None:
    """REDIS_URL names a port nothing listens on: the demo starts a redis-server of its own,
    uses it, stops it on exit."""
    import os
    import shutil

    import pytest

    from stream_kt.tools.brokers import free_port

    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    command = [
        sys.executable,
        "-m",
        "stream_kt.cli",
        "demo",
        "--train-students",
        "40",
        "--epochs",
        "1",
        "--students",
        "4",
        "--out",
        str(tmp_path / "demo"),
        "--json",
        "--seed",
        "4",
    ]
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


@contextlib.contextmanager
def port_taken(port: int = 0) -> Iterator[int]:
    """A port something else listens on: ``port`` (already taken is as good), or a free one taken here."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # taken already: by another program, which is the case under test too
            held.bind(("127.0.0.1", port))
            held.listen()
        yield port or held.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["flag", "environment", "config"])
def test_demo_serves_metrics_on_the_port_the_settings_name(where, tiny_checkpoint, redis_url, tmp_path) -> None:
    """A taken port named by --metrics-port, KT_METRICS_PORT or the --config file stops the
    demo at serve: it was used."""
    with port_taken() as port:
        config = tmp_path / "demo.toml"
        config.write_text(f"metrics_port = {port}\n")
        extra = {"flag": ["--metrics-port", str(port)], "environment": [], "config": ["--config", str(config)]}[where]
        env = {**os.environ, **({"KT_METRICS_PORT": str(port)} if where == "environment" else {})}
        command = [
            sys.executable,
            "-m",
            "stream_kt.cli",
            "demo",
            "--checkpoint",
            str(tiny_checkpoint),
            "--students",
            "2",
            "--redis",
            redis_url,
            "--out",
            str(tmp_path / "demo"),
            "--delete-state",
            *extra,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"stream-kt demo: error: serve exited with status 2: stream-kt serve: error: metrics port {port}: cannot listen"
    ), last


@pytest.mark.slow
def test_demo_with_metrics_port_0_runs_beside_another_on_9108(tiny_checkpoint, redis_url, tmp_path) -> None:
    with port_taken(9108):
        command = [
            sys.executable,
            "-m",
            "stream_kt.cli",
            "demo",
            "--checkpoint",
            str(tiny_checkpoint),
            "--students",
            "2",
            "--redis",
            redis_url,
            "--out",
            str(tmp_path / "demo"),
            "--delete-state",
            "--json",
            "--metrics-port",
            "0",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["all_answered"] is True and report["metrics_port"] not in (0, 9108)
    assert f"metrics http://127.0.0.1:{report['metrics_port']}/metrics" in result.stderr


SUMMARY = {
    "sent": 1000,
    "missing": 0,
    "outputs": 990,
    "dead_lettered": 10,
    "duplicates": 0,
    "events_per_s": 400.0,
    "p50_ms": 900.0,
    "p95_ms": 1800.0,
    "p99_ms": 2100.0,
}


def test_the_latency_line_says_what_it_measures_and_when_it_is_mostly_queueing() -> None:
    outpaced = follow_line(SUMMARY, send_events_per_s=5000.0)
    assert (
        "event-to-mastery latency (event sent to its mastery received) p50 900 ms, p95 1800 ms, p99 2100 ms" in outpaced
    )
    assert (
        "replay sent 5,000 events/s, faster than serve answered them (400/s), "
        "so that latency is mostly time queued behind earlier events" in outpaced
    )
    assert "--rate below 400" in outpaced
    kept_up = follow_line(SUMMARY, send_events_per_s=350.0)
    assert len(kept_up.splitlines()) == 1 and "queued" not in kept_up


def test_what_the_demo_leaves_in_redis_is_counted_and_the_command_it_prints_removes_it(redis_url, key_prefix) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("no redis-cli binary")
    client = redis.Redis.from_url(redis_url)
    for key in ("student:a", "student:b", "model:dkt-0123:vocab"):
        client.set(f"{key_prefix}:{key}", b"x")
    client.set(f"{key_prefix}-other:student:a", b"x")  # another run's prefix: not the demo's to remove
    try:
        line = left_in_redis(redis_url, key_prefix, count_keys_with_prefix(redis_url, key_prefix))
        assert (
            f"3 keys under {key_prefix}:* (each replayed student's state and the served model's vocabulary)" in line
            and "--delete-state" in line
        )
        command = line.split("Remove them:")[1].split("   (or")[0].strip()
        subprocess.run(command, shell=True, check=True, capture_output=True)
        assert count_keys_with_prefix(redis_url, key_prefix) == 0 and client.exists(f"{key_prefix}-other:student:a")
    finally:
        client.delete(f"{key_prefix}-other:student:a")
        client.close()
