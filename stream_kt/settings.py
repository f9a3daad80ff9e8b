"""One typed, frozen settings object for the streaming commands, each setting declared once.

A setting's declaration (``setting(...)``) carries its default, its constraints, its help
and the message a bad value gets.  Its name is its key in the TOML file, its flag is
``--`` and the name with dashes, its environment variable ``KT_`` and the name in
capitals, except where ``setting`` names another (``KAFKA_BOOTSTRAP_SERVERS``,
``REDIS_URL``, ``KT_BATCH``; ``--redis``, ``--group``, ``--batch``): those spellings
predate the rule and deployments use them.

pydantic-settings loads it (``settings_customise_sources``): the arguments (a command's
flags) win over the environment, the environment over the TOML file, the file over the
default.  ``StreamSettings(...)`` reads its arguments and ``os.environ``;
``load_settings`` takes the flags, an environment and ``--config FILE`` explicitly.  An
unknown key in the file is an error.  The click flags are made in
``stream_kt.commands.settings_flags``.

A bad value raises ``ConfigError`` with one clear line; a value of the wrong type names
where it came from (the flag, the variable, the file's key).

Secrets (the password in ``redis_url``, ``kafka_sasl_password``) never appear in
``repr`` or in a message: ``mask_url`` hides a URL's password.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from stream_kt.errors import ConfigError

LogFormat = Literal["text", "json"]
MasteryFormat = Literal["v2", "v1"]  # mastery messages (service/events.py)
MasteryDtype = Literal["float32", "float16"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
MASTERY_FORMATS: tuple[str, ...] = get_args(MasteryFormat)
MASTERY_DTYPES: tuple[str, ...] = get_args(MasteryDtype)
MAX_EVENT_BYTES = 4096  # an answer event is ~100 bytes; anything this big is not one
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
_MIN_INSYNC_INVALID = "min insync replicas {value} must be 0 (automatic) or between 1 and the replication factor"
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
        host, colon, port = (
            host_port.rpartition(":") if host_port.rfind(":") > host_port.rfind("]") else (host_port, "", "")
        )
        host = host.strip("[]")
        if not host or (colon and not port.isdigit()) or not 0 < int(port or 26379) < 65536:
            raise ValueError(f"redis url {shown!r}: Sentinel {host_port!r} must be HOST or HOST:PORT")
        sentinels.append((host, int(port or 26379)))
    parts = path.split("/") if path else []
    if not 1 <= len(parts) <= 2 or not parts[0] or (len(parts) == 2 and not parts[1].isdigit()) or "?" in path:
        raise ValueError(
            f"redis url {shown!r} must be {scheme}://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB] "
            "(SERVICE: the name Sentinel monitors)"
        )
    return SentinelTarget(
        tuple(sentinels),
        parts[0],
        int(parts[1]) if len(parts) == 2 else 0,
        username,
        password,
        scheme == "rediss+sentinel",
    )


def setting(
    default: Any,
    help: str = "",
    *,
    env: str | None = None,
    flag: str | None = None,
    invalid: str = "",
    secret: bool = False,
    **constraints: Any,
) -> Any:
    """A setting's one declaration: its default, help, pydantic ``constraints`` (``ge``, ``le``, ``min_length``) and
    ``invalid``, the message of a value they refuse (``{value}``, ``{name}``, the constraints' bounds, ``{choices}``
    and ``{either}`` for a ``Literal``).  ``env``, ``flag``: a spelling other than the name's (see the module's doc)."""
    return Field(
        default,
        validation_alias=env,
        description=help,
        json_schema_extra={"flag": flag, "invalid": invalid, "secret": secret},
        **constraints,
    )


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KT_", frozen=True, extra="forbid", populate_by_name=True)

    bootstrap: str = setting(
        "127.0.0.1:9092",
        "Kafka HOST:PORT[,HOST:PORT...]; 'embedded' starts the bundled broker (serve)",
        env="KAFKA_BOOTSTRAP_SERVERS",
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        "redis://, rediss:// (TLS), user:password@ for ACL AUTH; "
        "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] follows Sentinel",
        env="REDIS_URL",
        flag="--redis",
    )
    in_topic: str = setting("kt.answers", "answer events", min_length=1, invalid="{name} must not be empty")
    out_topic: str = setting("kt.mastery", "mastery messages", min_length=1, invalid="{name} must not be empty")
    dlq_topic: str = setting(
        "kt.answers.dlq",
        "dead letters: invalid events, with the reason",
        min_length=1,
        invalid="{name} must not be empty",
    )
    group_id: str = setting(
        "stream-kt",
        "Kafka consumer group of the processors",
        flag="--group",
        min_length=1,
        invalid="{name} must not be empty",
    )
    key_prefix: str = setting("kt", "every Redis key starts with it", min_length=1, invalid="{name} must not be empty")
    batch_size: int = setting(
        1024,
        "the fixed batch shape B of the model step (the largest of its shapes: 64, 256, 1024, ...)",
        env="KT_BATCH",
        flag="--batch",
        ge=1,
        le=4096,
        invalid="batch size {value} must be between {ge} and {le}",
    )
    max_wait_ms: int = setting(
        5, "longest wait to fill a batch", ge=0, le=60_000, invalid="max wait {value} ms must be between {ge} and {le}"
    )
    # How long the broker may hold a consumer's fetch that finds no new data.  Kafka answers as
    # soon as data arrives, so there a larger value costs nothing.  The embedded broker (tansu
    # 0.6) holds every fetch this long: there it is a latency floor, and a fetch whose scan
    # outlasts it returns a single record batch, so a consumer far behind on a partition of
    # many small batches never catches up.  25 ms carried the full ASSISTments replay (about
    # 55,000 events a partition); 5 ms did not.
    fetch_wait_ms: int = setting(
        25,
        "longest time the broker may hold an empty fetch (the embedded broker always holds it this long)",
        ge=1,
        le=60_000,
        invalid="fetch wait {value} ms must be between {ge} and {le}",
    )
    partitions: int = setting(
        6, "partitions of topics the processor creates", ge=1, invalid="partitions must be at least {ge}"
    )
    checkpoint: str = setting("", "the model serve serves: a checkpoint directory (stream-kt train)")
    shadow: str = setting(
        "",
        "a challenger checkpoint stepped beside the served one on the same events, with states of its own, "
        "scored online; publishes nothing unless --shadow-topic",
    )
    shadow_topic: str = setting("", "where the shadow's mastery messages go; empty = nowhere")
    backend: str = setting(
        "auto", "the model step's backend: auto (the best available), eager, cpu, cuda or neuron"
    )  # checked by stream_kt.backends, which lies above
    metrics_port: int = setting(
        9108,
        "Prometheus /metrics, /healthz, /readyz; 0 = none",
        ge=0,
        le=65535,
        invalid="metrics port {value} must be between 1 and {le}, or 0 for none",
    )
    unready_after_retry_s: int = setting(
        30,
        "/readyz fails while a batch has been retrying longer than this",
        ge=0,
        invalid="unready after retry {value} s must be 0 or positive",
    )
    log_format: LogFormat = setting("text", "text or json", invalid="log format {value!r} must be one of {choices}")
    state_ttl_s: int = setting(
        0,
        "expire a student's state this long after its last write; an expired student restarts from the "
        "initial state; 0 = keep forever",
        ge=0,
        invalid="state TTL {value} s must be 0 (keep forever) or positive",
    )
    max_event_bytes: int = setting(
        MAX_EVENT_BYTES,
        "a bigger event goes to the dead-letter topic",
        ge=64,
        le=1 << 20,
        invalid="max event bytes {value} must be between {ge} and {le}",
    )
    mastery_format: MasteryFormat = setting(
        "v2",
        "mastery messages: v2 (packed floats) or v1 (a list of floats)",
        invalid="mastery format {value!r} must be {either}",
    )
    mastery_dtype: MasteryDtype = setting(
        "float32",
        "float32, or float16 (v2 only: half the bytes)",
        invalid="mastery dtype {value!r} must be float32, or float16 with mastery format v2",
    )
    redis_cluster: bool = setting(False, "the Redis URL names a Redis Cluster node")
    redis_min_replicas: int = setting(
        0,
        "replicas a batch's state writes must reach (Redis WAIT) before its offsets are committed; 0 = no wait: "
        "a failover can lose the last writes",
        ge=0,
        le=16,
        invalid="redis min replicas {value} must be between 0 (no wait) and {le}",
    )
    redis_replica_timeout_ms: int = setting(
        1000,
        "longest wait for those replicas; a batch they have not acknowledged by then is retried",
        ge=1,
        le=60_000,
        invalid="redis replica timeout {value} ms must be between {ge} and {le}",
    )
    kafka_security_protocol: SecurityProtocol = setting(
        "PLAINTEXT",
        "|".join(get_args(SecurityProtocol)),
        invalid="kafka security protocol {value!r} must be one of {choices}",
    )
    kafka_sasl_mechanism: SaslMechanism = setting(
        "PLAIN",
        "|".join(get_args(SaslMechanism)) + " (SASL_* protocols)",
        invalid="kafka SASL mechanism {value!r} must be one of {choices}",
    )
    kafka_sasl_username: str = setting("")
    kafka_sasl_password: str = setting("", "prefer the environment: a flag shows in ps", secret=True)
    kafka_ssl_cafile: str = setting("", "PEM CA bundle for SSL and SASL_SSL; empty = the system's CAs")
    quality_window: int = setting(
        100_000,
        "online quality's sliding window: the last this many scored answers of each processor",
        ge=1,
        le=10_000_000,
        invalid="quality window {value} must be between {ge} and {le} answers",
    )
    kafka_connect_timeout_s: int = setting(
        20,
        "give up start-up (one line, exit 2) when Kafka has not answered within this many seconds: a wrong address, "
        "a port that is not Kafka's",
        ge=1,
        le=3600,
        invalid="kafka connect timeout {value} s must be between {ge} and {le}",
    )
    replication_factor: int = setting(
        0,
        "replicas of each topic serve creates; 0 = three where the cluster has three brokers or "
        "more, else one per broker",
        ge=0,
        le=32767,
        invalid="replication factor {value} must be 0 (three, or one per broker below three) or positive",
    )
    min_insync_replicas: int = setting(
        0,
        "min.insync.replicas of each replicated topic serve creates: a write needs this many in sync; "
        "0 = 2 with three replicas or more, else 1",
        ge=0,
        invalid=_MIN_INSYNC_INVALID,
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
        """The arguments over the environment over the TOML file (``toml_file`` of ``model_config``: none) over the
        defaults.

        ``load_settings`` builds the same three with the flags, an environment and ``--config FILE``."""
        return init_settings, env_settings, ConfigFile(settings_cls)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            built = values.get(
                "_build_sources"
            )  # load_settings's; else, for where a value came from, the arguments' and the environment's
            sources = built[0] if built else (InitSettingsSource(type(self), values), Environment(type(self)))
            raise ConfigError(_one_line(exc, sources)) from None

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

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, bootstrap: str) -> str:
        if not bootstrap or (bootstrap != "embedded" and any(":" not in h for h in bootstrap.split(","))):
            raise ValueError(f"bootstrap {bootstrap!r} must be HOST:PORT[,HOST:PORT...]")
        return bootstrap

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme in SENTINEL_SCHEMES:
            sentinel_target(url)  # raises ValueError with what is wrong
        elif scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"redis url {mask_url(url)!r} must start with redis://, rediss://, unix:// or redis+sentinel://"
            )
        return url

    @model_validator(mode="after")
    def _check(self) -> StreamSettings:
        """What one setting cannot check alone."""
        self._check_redis_cluster()
        if len({self.in_topic, self.out_topic, self.dlq_topic}) < 3:
            raise ValueError("input, output and dead-letter topics must be three different topics")
        if self.shadow_topic and self.shadow_topic in (self.in_topic, self.out_topic, self.dlq_topic):
            raise ValueError(
                f"shadow topic {self.shadow_topic!r} must differ from the input, output and dead-letter topics"
            )
        if self.replication_factor and self.min_insync_replicas > self.replication_factor:
            raise ValueError(_MIN_INSYNC_INVALID.format(value=self.min_insync_replicas))
        if self.mastery_format == "v1" and self.mastery_dtype != "float32":
            raise ValueError(_invalid("mastery_dtype", self.mastery_dtype))
        self._check_kafka_security()
        return self

    def _check_redis_cluster(self) -> None:
        if not self.redis_cluster:
            return
        redis_url = urlsplit(self.redis_url)
        if redis_url.scheme in SENTINEL_SCHEMES:
            raise ValueError(
                f"redis cluster: {mask_url(self.redis_url)!r} names Sentinels; a Redis Cluster fails over by itself: "
                "give one of its nodes as redis://"
            )
        if redis_url.scheme == "unix" or redis_url.path.strip("/") not in ("", "0"):
            raise ValueError(
                f"redis cluster: {mask_url(self.redis_url)!r} must be redis:// or rediss:// with database "
                "0 (a cluster has no other)"
            )
        if self.redis_min_replicas:
            raise ValueError(
                "redis min replicas: not supported on a Redis Cluster yet (WAIT must run on each primary's "
                "writing connection); set it to 0"
            )

    def _check_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"kafka security protocol {protocol} needs {ENV['kafka_sasl_username']} and "
                f"{ENV['kafka_sasl_password']}"
            )
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(
                f"kafka SASL credentials are set but the security protocol is {protocol}: "
                f"set {ENV['kafka_security_protocol']} to SASL_SSL or SASL_PLAINTEXT"
            )
        if self.kafka_ssl_cafile and not protocol.endswith("SSL"):
            raise ValueError(
                f"kafka ssl cafile is set but the security protocol is {protocol}: "
                f"set {ENV['kafka_security_protocol']} to SSL or SASL_SSL"
            )


def _extra(name: str) -> dict[str, Any]:
    extra = StreamSettings.model_fields[name].json_schema_extra
    assert isinstance(extra, dict)
    return extra


def _env(name: str) -> str:
    alias = StreamSettings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else StreamSettings.model_config.get("env_prefix", "") + name.upper()


ENV: dict[str, str] = {name: _env(name) for name in StreamSettings.model_fields}
FLAGS: dict[str, str] = {
    name: _extra(name)["flag"] or "--" + name.replace("_", "-") for name in StreamSettings.model_fields
}
SECRET_FIELDS = tuple(name for name in StreamSettings.model_fields if _extra(name)["secret"])
KAFKA_SECURITY = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
)
_NAME_OF = {alias: name for name, alias in ENV.items()}  # an error names a setting that has an alias by it (KT_BATCH)


# ---------------------------------------------------------------------- loading


class Flags(InitSettingsSource):
    """A command's flags: setting name -> the flag's text (or bool), None where not given."""

    def __init__(self, settings_cls: type[BaseSettings], flags: Mapping[str, object]) -> None:
        self.given = {name: value for name, value in flags.items() if value is not None}
        super().__init__(settings_cls, self.given)

    def origin(self, name: str) -> str | None:
        return FLAGS[name] if name in self.given else None


class Environment(EnvSettingsSource):
    """The ``KT_*`` variables (and the three named otherwise) of ``environ``, or of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        if environ is not None:  # instead of os.environ; keyed as the source keys it (case_sensitive is off)
            self.env_vars = {key.lower(): value for key, value in environ.items()}

    def origin(self, name: str) -> str | None:
        return ENV[name] if ENV[name].lower() in self.env_vars else None


class ConfigFile(TomlConfigSettingsSource):
    """A TOML file: a flat table keyed by the settings' names.  An unknown key, or a value not of its setting's type
    (TOML has integers, booleans and strings: no value is converted), is one line naming the file and the key."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | Path | None = None) -> None:
        self.path = path
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"config file {path}: No such file or directory")
        try:
            super().__init__(
                settings_cls, toml_file=Path(path) if path is not None else settings_cls.model_config.get("toml_file")
            )
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not TOML ({exc})") from None
        known = list(settings_cls.model_fields)
        for key, value in self.toml_data.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
                raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}")
            annotation = settings_cls.model_fields[key].annotation
            kind = str if get_origin(annotation) is Literal else annotation
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):  # type: ignore[arg-type]
                raise ConfigError(f"{path}: {key}: expected {_EXPECTED.get(kind, kind)}, got {_shown(key, value)}")

    def origin(self, name: str) -> str | None:
        return f"{self.path}: {name}" if name in self.toml_data else None


_EXPECTED: dict[object, str] = {int: "an integer", bool: "true or false", str: "a string"}


def load_settings(
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | Path | None = None,
) -> StreamSettings:
    """Flags over environment over the TOML file over defaults, then validated: ``StreamSettings``'s sources with
    ``flags`` (setting name -> the flag's text, None where not given) as the arguments, ``environ`` instead of
    ``os.environ`` where given, and ``config_path`` as the file."""
    sources = (
        Flags(StreamSettings, flags or {}),
        Environment(StreamSettings, environ),
        ConfigFile(StreamSettings, config_path),
    )
    return StreamSettings(_build_sources=(sources, {}))


# ---------------------------------------------------------------------- messages


_REFUSED = (
    "greater_than_equal",
    "less_than_equal",
    "string_too_short",
    "literal_error",
)  # by a constraint: the setting's ``invalid``
_NOT_PARSED = {
    "int_parsing": "an integer",
    "bool_parsing": "1/0, true/false, yes/no or on/off",
}  # a flag's or variable's text


def _one_line(exc: ValidationError, sources: tuple[PydanticBaseSettingsSource, ...]) -> str:
    """The first error of a construction: our own message for a failed check or a refused value; for text that is
    not of the setting's type, where it came from (``--batch``, ``KT_BATCH``, ``kt.toml: batch_size``)."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ValueError):
        return str(cause)
    loc = ".".join(str(part) for part in error["loc"])
    name = _NAME_OF.get(loc, loc)
    value = error.get("input")
    if name in StreamSettings.model_fields:
        if error["type"] in _NOT_PARSED:
            return f"{_origin(name, sources)}: expected {_NOT_PARSED[error['type']]}, got {_shown(name, value)}"
        if error["type"] in _REFUSED and _extra(name)["invalid"] and name not in SECRET_FIELDS:
            return _invalid(name, value)
    return f"{name or 'settings'}: {error['msg'].lower()}, got {_shown(name, value)}"


def _origin(name: str, sources: tuple[PydanticBaseSettingsSource, ...]) -> str:
    """Where setting ``name``'s value came from: its flag, variable or file and key, from the first of ``sources`` that
    has it; the name itself for an argument."""
    for source in sources:
        if isinstance(source, Flags | Environment | ConfigFile):
            if found := source.origin(name):
                return found
        elif isinstance(source, InitSettingsSource) and {name, ENV[name]} & set(source.init_kwargs):
            return name
    return name


def _invalid(name: str, value: object) -> str:
    """The ``invalid`` message of setting ``name`` for ``value``."""
    field = StreamSettings.model_fields[name]
    bounds = {
        key: getattr(rule, key) for rule in field.metadata for key in ("ge", "le", "min_length") if hasattr(rule, key)
    }
    choices = [str(choice) for choice in get_args(field.annotation)] if get_origin(field.annotation) is Literal else []
    return str(_extra(name)["invalid"]).format(
        value=value, name=name, choices=", ".join(choices), either=" or ".join(choices), **bounds
    )


def _shown(name: str, raw: object) -> str:
    return "***" if name in SECRET_FIELDS else repr(raw)
