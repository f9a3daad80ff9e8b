"""One typed, frozen settings object for the streaming commands.

Each field has a flag, an environment variable and a key of the optional TOML file
(``--config FILE``, keys named as the fields); the flag wins over the environment,
the environment over the file, the file over the default.  An unknown key in the
file is an error.  ``validate`` runs at start-up and raises ``ConfigError`` with one
clear line.

Secrets (the password in ``redis_url``, ``kafka_sasl_password``) never appear in
``repr`` or in a message: ``mask_url`` hides a URL's password.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from stream_kt.errors import ConfigError
from stream_kt.service.events import MAX_EVENT_BYTES

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_FORMATS = ("text", "json")
SECRET_FIELDS = ("kafka_sasl_password",)
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):[^/]*@")  # scheme://user:PASSWORD@


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` ("rediss://user:***@host:6379/0")."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


@dataclass(frozen=True)
class StreamSettings:
    bootstrap: str = "127.0.0.1:9092"  # KAFKA_BOOTSTRAP_SERVERS; "embedded" starts the bundled broker
    redis_url: str = "redis://127.0.0.1:6379/0"  # REDIS_URL; rediss://user:password@host for TLS and ACL AUTH
    in_topic: str = "kt.answers"  # KT_IN_TOPIC
    out_topic: str = "kt.mastery"  # KT_OUT_TOPIC
    dlq_topic: str = "kt.answers.dlq"  # KT_DLQ_TOPIC
    group_id: str = "stream-kt"  # KT_GROUP_ID
    key_prefix: str = "kt"  # KT_KEY_PREFIX: every Redis key starts with it
    batch_size: int = 64  # KT_BATCH: the fixed batch shape B of the model step
    max_wait_ms: int = 5  # KT_MAX_WAIT_MS: longest wait to fill a batch
    # KT_FETCH_WAIT_MS: how long the broker may hold a consumer's fetch that finds no new
    # data.  Kafka answers as soon as data arrives, so there a larger value costs nothing.
    # The embedded broker (tansu 0.6) holds every fetch this long: there it is a latency
    # floor, and a fetch whose scan outlasts it returns a single record batch, so a
    # consumer far behind on a partition of many small batches never catches up.  25 ms
    # carried the full ASSISTments replay (about 55,000 events a partition); 5 ms did not.
    fetch_wait_ms: int = 25
    partitions: int = 6  # KT_PARTITIONS: used when the processor creates missing topics
    metrics_port: int = 9108  # KT_METRICS_PORT: /metrics, /healthz, /readyz; 0 = no HTTP endpoint
    log_format: str = "text"  # KT_LOG_FORMAT: text, or json (one object a line)
    # KT_STATE_TTL_S: each state write sets this expiry, so a student inactive that long is
    # forgotten and restarts from the model's initial state; 0 = kept until deleted
    state_ttl_s: int = 0
    max_event_bytes: int = MAX_EVENT_BYTES  # KT_MAX_EVENT_BYTES: a bigger event is a dead letter ("oversized")
    redis_cluster: bool = False  # KT_REDIS_CLUSTER: REDIS_URL names a node of a Redis Cluster
    kafka_security_protocol: str = "PLAINTEXT"  # KT_KAFKA_SECURITY_PROTOCOL: one of SECURITY_PROTOCOLS
    kafka_sasl_mechanism: str = "PLAIN"  # KT_KAFKA_SASL_MECHANISM: one of SASL_MECHANISMS (SASL_* protocols)
    kafka_sasl_username: str = ""  # KT_KAFKA_SASL_USERNAME
    kafka_sasl_password: str = ""  # KT_KAFKA_SASL_PASSWORD: a secret, masked in repr
    kafka_ssl_cafile: str = ""  # KT_KAFKA_SSL_CAFILE: PEM CA bundle (SSL, SASL_SSL); empty = the system's CAs

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "***"
            elif f.name == "redis_url":
                value = mask_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"StreamSettings({', '.join(shown)})"

    def validate(self) -> "StreamSettings":
        if not self.bootstrap or any(":" not in h for h in self.bootstrap.split(",") if self.bootstrap != "embedded"):
            raise ConfigError(f"bootstrap {self.bootstrap!r} must be HOST:PORT[,HOST:PORT...]")
        redis_url = urlsplit(self.redis_url)
        if redis_url.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"redis url {mask_url(self.redis_url)!r} must start with redis://, rediss:// or unix://")
        for name in ("in_topic", "out_topic", "dlq_topic", "group_id", "key_prefix"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")
        if len({self.in_topic, self.out_topic, self.dlq_topic}) < 3:
            raise ConfigError("input, output and dead-letter topics must be three different topics")
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError(f"batch size {self.batch_size} must be between 1 and 4096")
        if not 0 <= self.max_wait_ms <= 60_000:
            raise ConfigError(f"max wait {self.max_wait_ms} ms must be between 0 and 60000")
        if not 1 <= self.fetch_wait_ms <= 60_000:
            raise ConfigError(f"fetch wait {self.fetch_wait_ms} ms must be between 1 and 60000")
        if self.partitions < 1:
            raise ConfigError("partitions must be at least 1")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port {self.metrics_port} must be between 1 and 65535, or 0 for none")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log format {self.log_format!r} must be one of {', '.join(LOG_FORMATS)}")
        if self.state_ttl_s < 0:
            raise ConfigError(f"state TTL {self.state_ttl_s} s must be 0 (keep forever) or positive")
        if not 64 <= self.max_event_bytes <= 1 << 20:
            raise ConfigError(f"max event bytes {self.max_event_bytes} must be between 64 and {1 << 20}")
        if self.redis_cluster and (redis_url.scheme == "unix" or redis_url.path.strip("/") not in ("", "0")):
            raise ConfigError(f"redis cluster: {mask_url(self.redis_url)!r} must be redis:// or rediss:// with database 0 (a cluster has no other)")
        self._validate_kafka_security()
        return self

    def _validate_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"kafka security protocol {protocol!r} must be one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"kafka SASL mechanism {self.kafka_sasl_mechanism!r} must be one of {', '.join(SASL_MECHANISMS)}")
        sasl = protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ConfigError(f"kafka security protocol {protocol} needs {ENV['kafka_sasl_username']} and {ENV['kafka_sasl_password']}")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ConfigError(f"kafka SASL credentials are set but the security protocol is {protocol}: set {ENV['kafka_security_protocol']} to SASL_SSL or SASL_PLAINTEXT")
        if self.kafka_ssl_cafile and not protocol.endswith("SSL"):
            raise ConfigError(f"kafka ssl cafile is set but the security protocol is {protocol}: set {ENV['kafka_security_protocol']} to SSL or SASL_SSL")


ENV = {
    "bootstrap": "KAFKA_BOOTSTRAP_SERVERS",
    "redis_url": "REDIS_URL",
    "in_topic": "KT_IN_TOPIC",
    "out_topic": "KT_OUT_TOPIC",
    "dlq_topic": "KT_DLQ_TOPIC",
    "group_id": "KT_GROUP_ID",
    "key_prefix": "KT_KEY_PREFIX",
    "batch_size": "KT_BATCH",
    "max_wait_ms": "KT_MAX_WAIT_MS",
    "fetch_wait_ms": "KT_FETCH_WAIT_MS",
    "partitions": "KT_PARTITIONS",
    "metrics_port": "KT_METRICS_PORT",
    "log_format": "KT_LOG_FORMAT",
    "state_ttl_s": "KT_STATE_TTL_S",
    "max_event_bytes": "KT_MAX_EVENT_BYTES",
    "redis_cluster": "KT_REDIS_CLUSTER",
    "kafka_security_protocol": "KT_KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "KT_KAFKA_SASL_MECHANISM",
    "kafka_sasl_username": "KT_KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "KT_KAFKA_SASL_PASSWORD",
    "kafka_ssl_cafile": "KT_KAFKA_SSL_CAFILE",
}
FLAGS = {
    "bootstrap": "--bootstrap",
    "redis_url": "--redis",
    "in_topic": "--in-topic",
    "out_topic": "--out-topic",
    "dlq_topic": "--dlq-topic",
    "group_id": "--group",
    "key_prefix": "--key-prefix",
    "batch_size": "--batch",
    "max_wait_ms": "--max-wait-ms",
    "fetch_wait_ms": "--fetch-wait-ms",
    "partitions": "--partitions",
    "metrics_port": "--metrics-port",
    "log_format": "--log-format",
    "state_ttl_s": "--state-ttl-s",
    "max_event_bytes": "--max-event-bytes",
    "redis_cluster": "--redis-cluster",
    "kafka_security_protocol": "--kafka-security-protocol",
    "kafka_sasl_mechanism": "--kafka-sasl-mechanism",
    "kafka_sasl_username": "--kafka-sasl-username",
    "kafka_sasl_password": "--kafka-sasl-password",
    "kafka_ssl_cafile": "--kafka-ssl-cafile",
}
HELP = {
    "redis_url": "redis://, rediss:// (TLS), user:password@ for ACL AUTH",
    "fetch_wait_ms": "longest time the broker may hold an empty fetch (the embedded broker always holds it this long)",
    "metrics_port": "Prometheus /metrics, /healthz, /readyz; 0 = none",
    "log_format": "text or json",
    "state_ttl_s": "expire a student's state this long after its last write; an expired student restarts from the initial state; 0 = keep forever",
    "max_event_bytes": "a bigger event goes to the dead-letter topic",
    "redis_cluster": "the Redis URL names a Redis Cluster node",
    "kafka_security_protocol": "|".join(SECURITY_PROTOCOLS),
    "kafka_sasl_mechanism": "|".join(SASL_MECHANISMS),
    "kafka_sasl_password": "prefer the environment: a flag shows in ps",
    "kafka_ssl_cafile": "PEM CA bundle for SSL and SASL_SSL",
}
CONNECTION_FIELDS = ("bootstrap", "redis_url", "in_topic", "out_topic", "dlq_topic", "key_prefix")


def add_settings_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] = tuple(ENV)) -> None:
    """Add ``--config FILE`` and the flags for ``names``; unset flags fall back to the environment, the file, the default."""
    parser.add_argument("--config", dest="settings_config", metavar="FILE.toml", help="settings file: keys named as the settings (batch_size = 64); flags and environment win over it")
    for f in fields(StreamSettings):
        if f.name not in names:
            continue
        help_text = f"{HELP[f.name]} " if f.name in HELP else ""
        help_text += f"(env {ENV[f.name]}, default {f.default!r})" if f.default == "" else f"(env {ENV[f.name]}, default {f.default})"
        if f.type in ("bool", bool):
            parser.add_argument(FLAGS[f.name], dest=f"setting_{f.name}", default=None, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(FLAGS[f.name], dest=f"setting_{f.name}", default=None, metavar=f.name.upper(), help=help_text)


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None, **overrides: object) -> StreamSettings:
    """Flags over environment over the ``--config`` file over defaults, then validated."""
    environ = os.environ if environ is None else environ
    config_path = getattr(args, "settings_config", None)
    from_file = read_config_file(config_path) if config_path else {}
    values: dict[str, object] = {}
    for f in fields(StreamSettings):
        raw = getattr(args, f"setting_{f.name}", None)
        where, typed = FLAGS[f.name], False
        if raw is None and ENV[f.name] in environ:
            raw, where = environ[ENV[f.name]], ENV[f.name]
        if raw is None and f.name in from_file:
            raw, where, typed = from_file[f.name], f"{config_path}: {f.name}", True
        if raw is not None:
            values[f.name] = _parse(f.name, str(f.type), raw, where, typed)
    values.update(overrides)
    return StreamSettings(**values).validate()  # type: ignore[arg-type]


def read_config_file(path: str | Path) -> dict[str, object]:
    """The settings of a TOML file: a flat table of field names; unknown keys are an error."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not TOML ({exc})") from None
    known = [f.name for f in fields(StreamSettings)]
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}")
    return table


def _parse(name: str, type_name: str, raw: object, where: str, typed: bool = False) -> object:
    """``raw`` as the field's type: a flag's or variable's text, or (``typed``) a TOML value of that type."""
    if type_name == "bool":
        if isinstance(raw, bool):
            return raw
        if typed:
            raise ConfigError(f"{where}: expected true or false, got {_shown(name, raw)}")
        if isinstance(raw, str) and raw.strip().lower() in TRUE + FALSE:
            return raw.strip().lower() in TRUE
        raise ConfigError(f"{where}: expected 1/0, true/false, yes/no or on/off, got {raw!r}")
    if type_name == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and not typed:
            try:
                return int(raw)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {_shown(name, raw)}")
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {_shown(name, raw)}")
    return raw


def _shown(name: str, raw: object) -> str:
    return "***" if name in SECRET_FIELDS else repr(raw)
