"""One typed, frozen settings object for the streaming commands, each setting declared once.

A field's declaration (``setting(...)``) carries its default, its environment variable,
its flag and its help; pydantic-settings reads the environment and the TOML file
(``--config FILE``, keys named as the fields) from it, and
``stream_kt.commands.settings_flags`` makes the click flags from it.  The flag wins over the environment, the environment over the
file, the file over the default (``load_settings``).  An unknown key in the file is an
error.

Constructing ``StreamSettings(...)`` validates, and reads nothing but its arguments:
a bad value raises ``ConfigError`` with one clear line; loading names where a badly
typed value came from (the flag, the variable, the file's key).

Secrets (the password in ``redis_url``, ``kafka_sasl_password``) never appear in
``repr`` or in a message: ``mask_url`` hides a URL's password.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from stream_kt.errors import ConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_FORMATS = ("text", "json")
MAX_EVENT_BYTES = 4096  # an answer event is ~100 bytes; anything this big is not one
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):[^/]*@")  # scheme://user:PASSWORD@


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` ("rediss://user:***@host:6379/0")."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the Sentinels, the service (master name), the database, AUTH, TLS."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    tls: bool


def sentinel_target(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[user:password@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]`` (``rediss+sentinel``: TLS
    to the Redis servers); a port left out is 26379.  ``ValueError`` names what is wrong, never the password."""
    shown = mask_url(url)
    scheme, _, rest = url.partition("://")
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"redis url {shown!r} must start with {' or '.join(s + '://' for s in SENTINEL_SCHEMES)}")
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) if colon else None
    sentinels = []
    for host_port in hosts.split(","):
        host, colon, port = host_port.rpartition(":") if host_port.rfind(":") > host_port.rfind("]") else (host_port, "", "")
        host = host.strip("[]")
        if not host or (colon and not port.isdigit()) or not 0 < int(port or 26379) < 65536:
            raise ValueError(f"redis url {shown!r}: Sentinel {host_port!r} must be HOST or HOST:PORT")
        sentinels.append((host, int(port or 26379)))
    parts = path.split("/") if path else []
    if not 1 <= len(parts) <= 2 or not parts[0] or (len(parts) == 2 and not parts[1].isdigit()) or "?" in path:
        raise ValueError(f"redis url {shown!r} must be {scheme}://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB] (SERVICE: the name Sentinel monitors)")
    return SentinelTarget(tuple(sentinels), parts[0], int(parts[1]) if len(parts) == 2 else 0, username, password, scheme == "rediss+sentinel")


def setting(default: Any, env: str, flag: str, help: str = "", secret: bool = False) -> Any:
    """A field's one declaration: default, environment variable, flag, help (and whether it is a secret)."""
    return Field(default, validation_alias=env, description=help, json_schema_extra={"env": env, "flag": flag, "secret": secret})


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    bootstrap: str = setting("127.0.0.1:9092", "KAFKA_BOOTSTRAP_SERVERS", "--bootstrap", "Kafka HOST:PORT[,HOST:PORT...]; 'embedded' starts the bundled broker (serve)")
    redis_url: str = setting("redis://127.0.0.1:6379/0", "REDIS_URL", "--redis", "redis://, rediss:// (TLS), user:password@ for ACL AUTH; redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] follows Sentinel")
    in_topic: str = setting("kt.answers", "KT_IN_TOPIC", "--in-topic", "answer events")
    out_topic: str = setting("kt.mastery", "KT_OUT_TOPIC", "--out-topic", "mastery messages")
    dlq_topic: str = setting("kt.answers.dlq", "KT_DLQ_TOPIC", "--dlq-topic", "dead letters: invalid events, with the reason")
    group_id: str = setting("stream-kt", "KT_GROUP_ID", "--group", "Kafka consumer group of the processors")
    key_prefix: str = setting("kt", "KT_KEY_PREFIX", "--key-prefix", "every Redis key starts with it")
    batch_size: int = setting(64, "KT_BATCH", "--batch", "the fixed batch shape B of the model step")
    max_wait_ms: int = setting(5, "KT_MAX_WAIT_MS", "--max-wait-ms", "longest wait to fill a batch")
    # How long the broker may hold a consumer's fetch that finds no new data.  Kafka answers as
    # soon as data arrives, so there a larger value costs nothing.  The embedded broker (tansu
    # 0.6) holds every fetch this long: there it is a latency floor, and a fetch whose scan
    # outlasts it returns a single record batch, so a consumer far behind on a partition of
    # many small batches never catches up.  25 ms carried the full ASSISTments replay (about
    # 55,000 events a partition); 5 ms did not.
    fetch_wait_ms: int = setting(25, "KT_FETCH_WAIT_MS", "--fetch-wait-ms", "longest time the broker may hold an empty fetch (the embedded broker always holds it this long)")
    partitions: int = setting(6, "KT_PARTITIONS", "--partitions", "partitions of topics the processor creates")
    checkpoint: str = setting("", "KT_CHECKPOINT", "--checkpoint", "the model serve serves: a checkpoint directory (stream-kt train)")
    shadow: str = setting("", "KT_SHADOW", "--shadow", "a challenger checkpoint stepped beside the served one on the same events, with states of its own, scored online; publishes nothing unless --shadow-topic")
    shadow_topic: str = setting("", "KT_SHADOW_TOPIC", "--shadow-topic", "where the shadow's mastery messages go; empty = nowhere")
    backend: str = setting("auto", "KT_BACKEND", "--backend", "the model step's backend: auto (the best available), eager, cpu, cuda or neuron")
    metrics_port: int = setting(9108, "KT_METRICS_PORT", "--metrics-port", "Prometheus /metrics, /healthz, /readyz; 0 = none")
    unready_after_retry_s: int = setting(30, "KT_UNREADY_AFTER_RETRY_S", "--unready-after-retry-s", "/readyz fails while a batch has been retrying longer than this")
    log_format: str = setting("text", "KT_LOG_FORMAT", "--log-format", "text or json")
    state_ttl_s: int = setting(0, "KT_STATE_TTL_S", "--state-ttl-s", "expire a student's state this long after its last write; an expired student restarts from the initial state; 0 = keep forever")
    max_event_bytes: int = setting(MAX_EVENT_BYTES, "KT_MAX_EVENT_BYTES", "--max-event-bytes", "a bigger event goes to the dead-letter topic")
    mastery_format: str = setting("v2", "KT_MASTERY_FORMAT", "--mastery-format", "mastery messages: v2 (packed floats) or v1 (a list of floats)")
    mastery_dtype: str = setting("float32", "KT_MASTERY_DTYPE", "--mastery-dtype", "float32, or float16 (v2 only: half the bytes)")
    redis_cluster: bool = setting(False, "KT_REDIS_CLUSTER", "--redis-cluster", "the Redis URL names a Redis Cluster node")
    redis_min_replicas: int = setting(0, "KT_REDIS_MIN_REPLICAS", "--redis-min-replicas", "replicas a batch's state writes must reach (Redis WAIT) before its offsets are committed; 0 = no wait: a failover can lose the last writes")
    redis_replica_timeout_ms: int = setting(1000, "KT_REDIS_REPLICA_TIMEOUT_MS", "--redis-replica-timeout-ms", "longest wait for those replicas; a batch they have not acknowledged by then is retried")
    kafka_security_protocol: str = setting("PLAINTEXT", "KT_KAFKA_SECURITY_PROTOCOL", "--kafka-security-protocol", "|".join(SECURITY_PROTOCOLS))
    kafka_sasl_mechanism: str = setting("PLAIN", "KT_KAFKA_SASL_MECHANISM", "--kafka-sasl-mechanism", "|".join(SASL_MECHANISMS) + " (SASL_* protocols)")
    kafka_sasl_username: str = setting("", "KT_KAFKA_SASL_USERNAME", "--kafka-sasl-username")
    kafka_sasl_password: str = setting("", "KT_KAFKA_SASL_PASSWORD", "--kafka-sasl-password", "prefer the environment: a flag shows in ps", secret=True)
    kafka_ssl_cafile: str = setting("", "KT_KAFKA_SSL_CAFILE", "--kafka-ssl-cafile", "PEM CA bundle for SSL and SASL_SSL; empty = the system's CAs")
    quality_window: int = setting(100_000, "KT_QUALITY_WINDOW", "--quality-window", "online quality's sliding window: the last this many scored answers of each processor")
    kafka_connect_timeout_s: int = setting(
        20, "KT_KAFKA_CONNECT_TIMEOUT_S", "--kafka-connect-timeout-s", "give up start-up (one line, exit 2) when Kafka has not answered within this many seconds: a wrong address, a port that is not Kafka's"
    )
    replication_factor: int = setting(
        0, "KT_REPLICATION_FACTOR", "--replication-factor", "replicas of each topic serve creates; 0 = three where the cluster has three brokers or more, else one per broker"
    )
    min_insync_replicas: int = setting(
        0, "KT_MIN_INSYNC_REPLICAS", "--min-insync-replicas", "min.insync.replicas of each replicated topic serve creates: a write needs this many in sync; 0 = 2 with three replicas or more, else 1"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # construction reads only its arguments; load_settings reads the environment and the file

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    def __repr__(self) -> str:
        shown = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value:
                value = "***"
            elif name == "redis_url":
                value = mask_url(value)
            shown.append(f"{name}={value!r}")
        return f"StreamSettings({', '.join(shown)})"

    __str__ = __repr__

    def replace(self, **changes: Any) -> StreamSettings:
        """A copy with ``changes``, validated."""
        return type(self)(**{**self.model_dump(), **changes})

    @model_validator(mode="after")
    def _check(self) -> StreamSettings:
        if not self.bootstrap or any(":" not in h for h in self.bootstrap.split(",") if self.bootstrap != "embedded"):
            raise ValueError(f"bootstrap {self.bootstrap!r} must be HOST:PORT[,HOST:PORT...]")
        self._check_redis()
        for name in ("in_topic", "out_topic", "dlq_topic", "group_id", "key_prefix"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if len({self.in_topic, self.out_topic, self.dlq_topic}) < 3:
            raise ValueError("input, output and dead-letter topics must be three different topics")
        if self.shadow_topic and self.shadow_topic in (self.in_topic, self.out_topic, self.dlq_topic):
            raise ValueError(f"shadow topic {self.shadow_topic!r} must differ from the input, output and dead-letter topics")
        if not 1 <= self.batch_size <= 4096:
            raise ValueError(f"batch size {self.batch_size} must be between 1 and 4096")
        if not 0 <= self.max_wait_ms <= 60_000:
            raise ValueError(f"max wait {self.max_wait_ms} ms must be between 0 and 60000")
        if not 1 <= self.fetch_wait_ms <= 60_000:
            raise ValueError(f"fetch wait {self.fetch_wait_ms} ms must be between 1 and 60000")
        if self.partitions < 1:
            raise ValueError("partitions must be at least 1")
        if not 1 <= self.kafka_connect_timeout_s <= 3600:
            raise ValueError(f"kafka connect timeout {self.kafka_connect_timeout_s} s must be between 1 and 3600")
        if not 0 <= self.replication_factor <= 32767:
            raise ValueError(f"replication factor {self.replication_factor} must be 0 (three, or one per broker below three) or positive")
        if self.min_insync_replicas < 0 or (self.replication_factor and self.min_insync_replicas > self.replication_factor):
            raise ValueError(f"min insync replicas {self.min_insync_replicas} must be 0 (automatic) or between 1 and the replication factor")
        if self.unready_after_retry_s < 0:
            raise ValueError(f"unready after retry {self.unready_after_retry_s} s must be 0 or positive")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics port {self.metrics_port} must be between 1 and 65535, or 0 for none")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log format {self.log_format!r} must be one of {', '.join(LOG_FORMATS)}")
        if not 1 <= self.quality_window <= 10_000_000:
            raise ValueError(f"quality window {self.quality_window} must be between 1 and 10000000 answers")
        if self.state_ttl_s < 0:
            raise ValueError(f"state TTL {self.state_ttl_s} s must be 0 (keep forever) or positive")
        if not 64 <= self.max_event_bytes <= 1 << 20:
            raise ValueError(f"max event bytes {self.max_event_bytes} must be between 64 and {1 << 20}")
        if self.mastery_format not in ("v2", "v1"):
            raise ValueError(f"mastery format {self.mastery_format!r} must be v2 or v1")
        if self.mastery_dtype not in ("float32", "float16") or (self.mastery_format == "v1" and self.mastery_dtype != "float32"):
            raise ValueError(f"mastery dtype {self.mastery_dtype!r} must be float32, or float16 with mastery format v2")
        self._check_kafka_security()
        return self

    def _check_redis(self) -> None:
        redis_url = urlsplit(self.redis_url)
        if redis_url.scheme in SENTINEL_SCHEMES:
            sentinel_target(self.redis_url)  # raises ValueError with what is wrong
            if self.redis_cluster:
                raise ValueError(f"redis cluster: {mask_url(self.redis_url)!r} names Sentinels; a Redis Cluster fails over by itself: give one of its nodes as redis://")
        elif redis_url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"redis url {mask_url(self.redis_url)!r} must start with redis://, rediss://, unix:// or redis+sentinel://")
        if self.redis_cluster and (redis_url.scheme == "unix" or redis_url.path.strip("/") not in ("", "0")):
            raise ValueError(f"redis cluster: {mask_url(self.redis_url)!r} must be redis:// or rediss:// with database 0 (a cluster has no other)")
        if not 0 <= self.redis_min_replicas <= 16:
            raise ValueError(f"redis min replicas {self.redis_min_replicas} must be between 0 (no wait) and 16")
        if self.redis_min_replicas and self.redis_cluster:
            raise ValueError("redis min replicas: not supported on a Redis Cluster yet (WAIT must run on each primary's writing connection); set it to 0")
        if not 1 <= self.redis_replica_timeout_ms <= 60_000:
            raise ValueError(f"redis replica timeout {self.redis_replica_timeout_ms} ms must be between 1 and 60000")

    def _check_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"kafka security protocol {protocol!r} must be one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"kafka SASL mechanism {self.kafka_sasl_mechanism!r} must be one of {', '.join(SASL_MECHANISMS)}")
        sasl = protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"kafka security protocol {protocol} needs {ENV['kafka_sasl_username']} and {ENV['kafka_sasl_password']}")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(f"kafka SASL credentials are set but the security protocol is {protocol}: set {ENV['kafka_security_protocol']} to SASL_SSL or SASL_PLAINTEXT")
        if self.kafka_ssl_cafile and not protocol.endswith("SSL"):
            raise ValueError(f"kafka ssl cafile is set but the security protocol is {protocol}: set {ENV['kafka_security_protocol']} to SSL or SASL_SSL")


def _extra(name: str) -> dict[str, Any]:
    extra = StreamSettings.model_fields[name].json_schema_extra
    assert isinstance(extra, dict)
    return extra


ENV: dict[str, str] = {name: _extra(name)["env"] for name in StreamSettings.model_fields}
FLAGS: dict[str, str] = {name: _extra(name)["flag"] for name in StreamSettings.model_fields}
SECRET_FIELDS = tuple(name for name in StreamSettings.model_fields if _extra(name)["secret"])
KAFKA_SECURITY = ("kafka_security_protocol", "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_cafile")


def _one_line(exc: ValidationError) -> str:
    """The first error of a construction: our own message for a failed check, else the field and what it expects."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ValueError):
        return str(cause)
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    return f"{name}: {error['msg'].lower()}, got {_shown(name, error.get('input'))}"


# ---------------------------------------------------------------------- loading


def load_settings(flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None, config_path: str | Path | None = None, **overrides: Any) -> StreamSettings:
    """Flags over environment over the TOML file over defaults, then validated.

    ``flags``: field name -> the flag's raw text (or bool), None where not given.
    Each value is typed where it came from, so a bad one names its flag, variable or key.
    """
    environ = os.environ if environ is None else environ
    field_of = {env: name for name, env in ENV.items()}
    from_env = {field_of[key]: value for key, value in _Environment(environ)().items()}  # the source names fields by their variable
    from_file = read_config_file(config_path) if config_path else {}
    values: dict[str, Any] = {}
    for name, field in StreamSettings.model_fields.items():
        kind = field.annotation.__name__ if isinstance(field.annotation, type) else str(field.annotation)
        if (flags or {}).get(name) is not None:
            values[name] = _typed(name, kind, (flags or {})[name], FLAGS[name])
        elif name in from_env:
            values[name] = _typed(name, kind, from_env[name], ENV[name])
        elif name in from_file:
            values[name] = _typed(name, kind, from_file[name], f"{config_path}: {name}", typed=True)
    values.update(overrides)
    return StreamSettings(**values)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over ``environ`` rather than always ``os.environ``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(StreamSettings, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._environ)


def read_config_file(path: str | Path) -> dict[str, object]:
    """The settings of a TOML file: a flat table of field names; unknown keys are an error."""
    if not Path(path).is_file():
        raise ConfigError(f"config file {path}: No such file or directory")
    try:
        table = TomlConfigSettingsSource(StreamSettings, toml_file=Path(path))()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not TOML ({exc})") from None
    field_of = {env: name for name, env in ENV.items()}
    table = {field_of.get(key, key): value for key, value in table.items()}  # the source names known fields by their alias
    known = list(StreamSettings.model_fields)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}")
    return dict(table)


def _typed(name: str, kind: str, raw: object, where: str, typed: bool = False) -> object:
    """``raw`` as the field's type: a flag's or variable's text, or (``typed``) a TOML value of that type."""
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if typed:
            raise ConfigError(f"{where}: expected true or false, got {_shown(name, raw)}")
        if isinstance(raw, str) and raw.strip().lower() in TRUE + FALSE:
            return raw.strip().lower() in TRUE
        raise ConfigError(f"{where}: expected 1/0, true/false, yes/no or on/off, got {raw!r}")
    if kind == "int":
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
