"""One typed, frozen settings object for the streaming commands.

Each field has a flag and an environment variable (the flag wins); ``validate`` runs
at start-up and raises ``ConfigError`` with one clear line.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from urllib.parse import urlparse

from stream_kt.errors import ConfigError


@dataclass(frozen=True)
class StreamSettings:
    bootstrap: str = "127.0.0.1:9092"  # KAFKA_BOOTSTRAP_SERVERS; "embedded" starts the bundled broker
    redis_url: str = "redis://127.0.0.1:6379/0"  # REDIS_URL
    in_topic: str = "kt.answers"  # KT_IN_TOPIC
    out_topic: str = "kt.mastery"  # KT_OUT_TOPIC
    dlq_topic: str = "kt.answers.dlq"  # KT_DLQ_TOPIC
    group_id: str = "stream-kt"  # KT_GROUP_ID
    key_prefix: str = "kt"  # KT_KEY_PREFIX: every Redis key starts with it
    batch_size: int = 64  # KT_BATCH: the fixed batch shape B of the model step
    max_wait_ms: int = 5  # KT_MAX_WAIT_MS: longest wait to fill a batch
    partitions: int = 6  # KT_PARTITIONS: used when the processor creates missing topics

    def validate(self) -> "StreamSettings":
        if not self.bootstrap or any(":" not in h for h in self.bootstrap.split(",") if self.bootstrap != "embedded"):
            raise ConfigError(f"bootstrap {self.bootstrap!r} must be HOST:PORT[,HOST:PORT...]")
        if urlparse(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"redis url {self.redis_url!r} must start with redis://, rediss:// or unix://")
        for name in ("in_topic", "out_topic", "dlq_topic", "group_id", "key_prefix"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")
        if len({self.in_topic, self.out_topic, self.dlq_topic}) < 3:
            raise ConfigError("input, output and dead-letter topics must be three different topics")
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError(f"batch size {self.batch_size} must be between 1 and 4096")
        if not 0 <= self.max_wait_ms <= 60_000:
            raise ConfigError(f"max wait {self.max_wait_ms} ms must be between 0 and 60000")
        if self.partitions < 1:
            raise ConfigError("partitions must be at least 1")
        return self


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
    "partitions": "KT_PARTITIONS",
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
    "partitions": "--partitions",
}
CONNECTION_FIELDS = ("bootstrap", "redis_url", "in_topic", "out_topic", "dlq_topic", "key_prefix")


def add_settings_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] = tuple(ENV)) -> None:
    """Add the flags for ``names``; their defaults come from the environment at parse time."""
    for f in fields(StreamSettings):
        if f.name in names:
            parser.add_argument(FLAGS[f.name], dest=f"setting_{f.name}", default=None, help=f"(env {ENV[f.name]}, default {f.default})")


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None, **overrides: object) -> StreamSettings:
    """Flags over environment over defaults, then validated."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(StreamSettings):
        raw = getattr(args, f"setting_{f.name}", None)
        if raw is None:
            raw = environ.get(ENV[f.name])
        if raw is None:
            continue
        if f.type in ("int", int):
            try:
                values[f.name] = int(raw)
            except ValueError:
                raise ConfigError(f"{FLAGS[f.name]} / {ENV[f.name]}: expected an integer, got {raw!r}") from None
        else:
            values[f.name] = str(raw)
    values.update(overrides)
    return StreamSettings(**values).validate()  # type: ignore[arg-type]
