"""Settings: flag > environment > file > default, one-line validation errors, secrets
masked, the TTL, Kafka security."""

from __future__ import annotations

import asyncio
import logging
import ssl

import click
import pytest

from stream_kt.cli import main
from stream_kt.commands.settings_flags import settings_from_options, settings_options
from stream_kt.errors import ConfigError
from stream_kt.service import kafka_io, keys
from stream_kt.service.exceptions import StreamError
from stream_kt.service.redis_store import StudentStore, redis_client_sync
from stream_kt.service.state import StudentState
from stream_kt.settings import ENV, StreamSettings, mask_url
from stream_kt.tools.brokers import free_port

SECRET = "hunter2-secret"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the machine's environment."""
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)


def parse(argv: list[str]) -> dict:
    """The keyword arguments a command with every settings flag receives for ``argv``."""
    received: dict = {}

    @click.command()
    @settings_options()
    def probe(**options: object) -> None:
        received.update(options)

    probe.main(argv, standalone_mode=False)
    return received


def test_flag_beats_environment_beats_file_beats_default(tmp_path):
    config = tmp_path / "kt.toml"
    config.write_text('batch_size = 32\nmax_wait_ms = 7\nlog_format = "json"\nredis_cluster = false\n')
    env = {"KT_BATCH": "48", "KT_REDIS_CLUSTER": "1"}
    assert settings_from_options(parse(["--config", str(config), "--batch", "16"]), env).batch_size == 16
    from_env = settings_from_options(parse(["--config", str(config)]), env)
    assert (from_env.batch_size, from_env.redis_cluster) == (48, True)
    from_file = settings_from_options(parse(["--config", str(config)]), {})
    assert (from_file.batch_size, from_file.max_wait_ms, from_file.log_format, from_file.redis_cluster) == (
        32,
        7,
        "json",
        False,
    )
    assert settings_from_options(parse([]), {}) == StreamSettings()
    assert settings_from_options(parse(["--no-redis-cluster"]), env).redis_cluster is False


@pytest.mark.parametrize(
    "text, message",
    [
        ("batchsize = 32\n", "unknown setting 'batchsize'; did you mean 'batch_size'?"),
        ("batch_size = '32'\n", "batch_size: expected an integer, got '32'"),
        ("redis_cluster = 1\n", "redis_cluster: expected true or false, got 1"),
        ("batch_size = \n", "not TOML"),
    ],
)
def test_a_bad_config_file_is_one_clear_error(tmp_path, text, message):
    config = tmp_path / "kt.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        settings_from_options(parse(["--config", str(config)]), {})


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--batch", "0"], {}, "batch size 0 must be between 1 and 4096"),
        (["--batch", "many"], {}, "--batch: expected an integer, got 'many'"),
        (["--config", "/nonexistent/kt.toml"], {}, "config file /nonexistent/kt.toml: No such file or directory"),
        (
            [],
            {"KT_REDIS_CLUSTER": "maybe"},
            "KT_REDIS_CLUSTER: expected 1/0, true/false, yes/no or on/off, got 'maybe'",
        ),
        ([], {"KT_METRICS_PORT": "70000"}, "metrics port 70000 must be between 1 and 65535, or 0 for none"),
        ([], {"KT_LOG_FORMAT": "xml"}, "log format 'xml' must be one of text, json"),
        ([], {"KT_STATE_TTL_S": "-1"}, "state TTL -1 s must be 0 (keep forever) or positive"),
        ([], {"KT_MAX_EVENT_BYTES": "10"}, "max event bytes 10 must be between 64 and 1048576"),
        (
            [],
            {"KT_REDIS_CLUSTER": "1", "REDIS_URL": "redis://h:6379/3"},
            "redis cluster: 'redis://h:6379/3' must be redis:// or rediss:// with database 0",
        ),
        (
            [],
            {"KT_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "kafka security protocol 'TLS' must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            [],
            {"KT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KT_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "kafka SASL mechanism 'GSSAPI' must be one of PLAIN",
        ),
        (
            [],
            {"KT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "kafka security protocol SASL_SSL needs KT_KAFKA_SASL_USERNAME and KT_KAFKA_SASL_PASSWORD",
        ),
        (
            [],
            {"KT_KAFKA_SASL_PASSWORD": SECRET},
            "kafka SASL credentials are set but the security protocol is PLAINTEXT",
        ),
        ([], {"KT_KAFKA_SSL_CAFILE": "/ca.pem"}, "kafka ssl cafile is set but the security protocol is PLAINTEXT"),
        ([], {"REDIS_URL": f"http://user:{SECRET}@h"}, "redis url 'http://user:***@h' must start with redis://"),
    ],
)
def test_invalid_settings_exit_2_with_one_line_and_no_secret(args, env, message, tmp_path, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--checkpoint", str(tmp_path / "unused"), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"stream-kt serve: error: {message}")
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert SECRET not in captured.err + captured.out


def test_repr_and_urls_mask_passwords():
    settings = StreamSettings(
        redis_url=f"rediss://kt:{SECRET}@redis:6379/0",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="kt",
        kafka_sasl_password=SECRET,
    )
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert "rediss://kt:***@redis:6379/0" in repr(settings) and "kafka_sasl_password='***'" in repr(settings)
    assert mask_url(f"redis://:{SECRET}@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_an_unreachable_redis_with_a_password_is_reported_masked(caplog):
    url = f"rediss://kt:{SECRET}@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING), pytest.raises(StreamError) as raised:
        asyncio.run(StudentStore.connect(url, "kt", attempts=2, first_delay_s=0.01))
    assert str(raised.value).startswith("cannot reach Redis at rediss://kt:***@127.0.0.1:")
    assert caplog.records and SECRET not in caplog.text and SECRET not in str(raised.value)


@pytest.mark.parametrize("ttl_s", [0, 120])
def test_state_ttl_sets_an_expiry_on_every_write(ttl_s, redis_url, key_prefix):
    async def write() -> None:
        store = await StudentStore.connect(redis_url, key_prefix, state_ttl_s=ttl_s)
        try:
            await store.write_blobs(
                ["s1", "s2"], [StudentState("s1", "v1").to_bytes(), StudentState("s2", "v1").to_bytes()], [0, 0]
            )
        finally:
            await store.close()

    asyncio.run(write())
    client = redis_client_sync(redis_url)
    ttls = [client.ttl(keys.student_key(s, key_prefix)) for s in ("s1", "s2")]
    client.close()
    assert all(0 < t <= ttl_s for t in ttls) if ttl_s else ttls == [-1, -1]


def ca_bundle() -> str:
    """Any PEM CA bundle: certifi's, else the system's."""
    try:
        import certifi

        return certifi.where()
    except ImportError:
        return ssl.get_default_verify_paths().cafile or pytest.skip("no PEM CA bundle here")


def test_kafka_security_reaches_consumer_producer_and_admin(monkeypatch):
    captured: dict[str, dict] = {}

    def recorder(kind: str):
        class Client:
            def __init__(self, **kwargs: object) -> None:
                captured[kind] = kwargs

            def subscribe(self, *args: object, **kwargs: object) -> None:
                pass

            async def start(self) -> None:
                raise kafka_io.KafkaError("recorded")

            async def close(self) -> None:
                pass

        return Client

    for name, kind in (
        ("AIOKafkaConsumer", "consumer"),
        ("AIOKafkaProducer", "producer"),
        ("AIOKafkaAdminClient", "admin"),
    ):
        monkeypatch.setattr(kafka_io, name, recorder(kind))
    ca_file = ca_bundle()
    settings = StreamSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="kt",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=ca_file,
    )
    kafka_io.make_consumer(settings, listener=None)
    kafka_io.make_producer(settings)
    with pytest.raises(StreamError):
        asyncio.run(
            kafka_io.ensure_topics(settings.bootstrap, ["t"], 1, attempts=1, security=kafka_io.client_options(settings))
        )
    for kind in ("consumer", "producer", "admin"):
        options = captured[kind]
        assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512", kind
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("kt", SECRET)
        assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert kafka_io.client_options(StreamSettings()) == {"security_protocol": "PLAINTEXT"}


def test_a_missing_kafka_ca_file_is_a_config_error(tmp_path):
    settings = StreamSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "ca.pem"))
    with pytest.raises(ConfigError, match=r"kafka ssl cafile .*ca.pem: no such file"):
        kafka_io.client_options(settings)


def test_the_constructor_reads_the_environment_below_its_arguments(monkeypatch):
    monkeypatch.setenv("KT_BATCH", "48")
    monkeypatch.setenv("KT_LOG_FORMAT", "json")
    assert (StreamSettings().batch_size, StreamSettings().log_format) == (48, "json")
    assert StreamSettings(batch_size=16).replace(log_format="text") == StreamSettings(batch_size=16, log_format="text")
    assert StreamSettings(batch_size=16).batch_size == 16
    monkeypatch.setenv("KT_BATCH", "many")
    with pytest.raises(ConfigError, match="^KT_BATCH: expected an integer, got 'many'"):
        StreamSettings()
    with pytest.raises(ConfigError, match="^batch_size: expected an integer, got 'x'"):
        StreamSettings(batch_size="x")
