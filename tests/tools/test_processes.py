"""The launch layer: serve's settings travel whole, and our own redis-server keeps its data across a restart."""

from __future__ import annotations

import pytest

from stream_kt.service.exceptions import StreamError
from stream_kt.settings import ENV, StreamSettings, load_settings
from stream_kt.tools.processes import RedisSentinel, RedisServer, serve_command, settings_environ, wait_until

EVERY_FIELD_CHANGED = StreamSettings(  # from its default, each
    bootstrap="kafka-1:9093,kafka-2:9093",
    redis_url="rediss://user:secret@redis:6380/0",
    in_topic="a",
    out_topic="b",
    dlq_topic="c",
    group_id="g",
    key_prefix="k",
    batch_size=7,
    max_wait_ms=9,
    fetch_wait_ms=11,
    partitions=2,
    checkpoint="/models/dkt",
    backend="cpu",
    metrics_port=0,
    unready_after_retry_s=3,
    log_format="json",
    state_ttl_s=5,
    max_event_bytes=100,
    mastery_format="v2",
    mastery_dtype="float16",
    redis_cluster=True,
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_mechanism="SCRAM-SHA-256",
    kafka_sasl_username="u",
    kafka_sasl_password="pw",
    kafka_ssl_cafile="/etc/ca.pem",
    kafka_connect_timeout_s=4,
    shadow="/models/challenger",
    shadow_topic="d",
    quality_window=1000,
    redis_replica_timeout_ms=500,
    replication_factor=2,
    min_insync_replicas=1,
)


def test_every_setting_reaches_serve_and_reads_back_as_itself() -> None:
    changed = [
        name
        for name in StreamSettings.model_fields
        if getattr(EVERY_FIELD_CHANGED, name) != StreamSettings.model_fields[name].default
    ]
    # every field but mastery_format (v1 has no float16) and redis_min_replicas (refused with redis_cluster):
    # a dropped one would show
    assert set(StreamSettings.model_fields) - set(changed) == {"mastery_format", "redis_min_replicas"}
    waits = EVERY_FIELD_CHANGED.replace(redis_cluster=False, redis_min_replicas=2)
    assert load_settings(environ=settings_environ(waits)) == waits
    environ = settings_environ(EVERY_FIELD_CHANGED)
    assert set(environ) == set(ENV.values())
    assert load_settings(environ=environ) == EVERY_FIELD_CHANGED
    assert load_settings(environ=settings_environ(StreamSettings())) == StreamSettings()
    command = serve_command("--log-format", "text")
    assert command[-3:] == ["serve", "--log-format", "text"]
    assert not any("secret" in part or "pw" == part for part in command), (
        "passwords travel in the environment, never in ps"
    )


def test_wait_until_returns_once_it_holds_and_names_what_never_did() -> None:
    calls = iter(range(100))
    wait_until(lambda: next(calls) >= 3, timeout_s=5, what="the third poll")
    with pytest.raises(StreamError, match="the impossible: not within 0.1 s"):
        wait_until(lambda: False, timeout_s=0.1, what="the impossible")


def test_one_command_line_starts_every_redis_server_a_replica_or_a_cluster_node_included(tmp_path) -> None:
    plain = RedisServer(tmp_path / "a", 7001).command()
    assert (
        plain[:2] == ["redis-server", str(tmp_path / "a" / "redis.conf")] and plain[plain.index("--port") + 1] == "7001"
    )
    assert (
        plain[plain.index("--appendfsync") + 1] == "always"
        and "--replicaof" not in plain
        and "--cluster-enabled" not in plain
    )
    replica = RedisServer(tmp_path / "b", 7002, persistent=False, replica_of=7001, replica_priority=0).command()
    assert (
        replica[replica.index("--replicaof") + 1 :][:2] == ["127.0.0.1", "7001"]
        and replica[replica.index("--replica-priority") + 1] == "0"
    )
    assert replica[replica.index("--appendonly") + 1] == "no"
    sentinel = RedisSentinel(tmp_path / "s", 7001, port=7003)
    assert sentinel.command() == ["redis-sentinel", str(tmp_path / "s" / "sentinel.conf")]
    sentinel.directory.mkdir()
    sentinel.write_config()
    assert "sentinel monitor stream-kt 127.0.0.1 7001 2" in sentinel.config_path.read_text().splitlines()


@pytest.mark.skipif(not RedisServer.available(), reason="no redis-server binary")
@pytest.mark.parametrize("how", ["sigterm", "shutdown-nosave", "sigkill"])
def test_a_persistent_redis_server_restarted_on_its_port_and_directory_keeps_every_write(tmp_path, how) -> None:
    with RedisServer(tmp_path / "redis") as server:
        client = server.client()
        client.set("k", b"v")
        client.close()
        port = server.port
        server.restart(how)
        assert (server.port, server.restarts) == (port, 1)
        client = server.client()
        assert client.get("k") == b"v"
        client.close()
    assert server.process is None


@pytest.mark.skipif(not RedisServer.available(), reason="no redis-server binary")
def test_a_redis_server_without_persistence_starts_empty_again(tmp_path) -> None:
    with RedisServer(tmp_path / "redis", persistent=False) as server:
        client = server.client()
        client.set("k", b"v")
        client.close()
        server.restart("sigkill")
        client = server.client()
        assert client.get("k") is None
        client.close()
