"""Thin adapter: student states in Redis, one key per student (``keys.student_key``).

The one place any stream-kt code makes a Redis client: the processor, ``forget``,
``inspect``, the demo and the benchmarks all go through ``StudentStore``.

One batch costs two round trips: a pipeline of GETs to read and a pipeline of SETs to
write, both ``transaction=False``.  Not MGET/MSET and not MULTI: those are multi-key
commands, which Redis Cluster refuses across hash slots; each student's key is
written whole, so each update is atomic on its own.  On a cluster
(``settings.redis_cluster``) the same pipelines go through ``RedisCluster``, which
splits them by slot: one round trip per primary.

With ``state_ttl_s`` > 0 every SET carries ``EX state_ttl_s``: a student inactive that
long loses the state and starts again from the model's initial state.

Errors are not retried here: a ``redis.RedisError`` reaches the processor, which
backs off and retries the whole batch (and commits nothing meanwhile).  The URL's
password never reaches a log line or an error (``settings.mask_url``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from stream_kt.service import keys
from stream_kt.service.exceptions import StreamError
from stream_kt.service.state import StudentState
from stream_kt.settings import StreamSettings, mask_url

log = logging.getLogger(__name__)

# what a Redis failure raises: RedisClusterException (a slot not covered, ...) is not a RedisError
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)


def redis_client(url: str, *, cluster: bool = False, socket_timeout_s: float = 5.0) -> aioredis.Redis | RedisCluster:
    """An asyncio client for ``url``: TLS with rediss://, ACL AUTH from user:password@."""
    if cluster:
        # the cluster client keeps its own few retries: they follow MOVED/ASK and failovers
        return RedisCluster.from_url(url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s)
    # no client-side retries: the processor's batch retry logs every failure
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s)


class StudentStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str, state_ttl_s: int = 0) -> None:
        self.client = client
        self.prefix = prefix
        self.state_ttl_s = state_ttl_s

    @classmethod
    async def connect(
        cls,
        url: str,
        prefix: str,
        attempts: int = 5,
        first_delay_s: float = 0.25,
        socket_timeout_s: float = 5.0,
        *,
        cluster: bool = False,
        state_ttl_s: int = 0,
    ) -> StudentStore:
        """Connect and PING, retrying a bounded number of times; raise ``StreamError`` after that."""
        shown = mask_url(url)
        delay_s = first_delay_s
        for attempt in range(1, attempts + 1):
            client = None
            try:
                client = redis_client(url, cluster=cluster, socket_timeout_s=socket_timeout_s)
                await client.ping()  # a cluster client maps the slots here
                return cls(client, prefix, state_ttl_s)
            except REDIS_ERRORS as exc:
                if client is not None:
                    await client.aclose()
                log.warning("redis %s: attempt %d/%d failed: %s", shown, attempt, attempts, exc)
                if attempt == attempts:
                    raise StreamError(f"cannot reach Redis at {shown}: {exc}") from None
                await asyncio.sleep(delay_s)
                delay_s *= 2
        raise AssertionError("unreachable")

    @classmethod
    async def from_settings(cls, settings: StreamSettings, attempts: int = 5) -> StudentStore:
        return await cls.connect(settings.redis_url, settings.key_prefix, attempts, cluster=settings.redis_cluster, state_ttl_s=settings.state_ttl_s)

    async def read(self, student_ids: Iterable[str]) -> dict[str, StudentState | None]:
        """States of ``student_ids`` (None for a student never seen), in one round trip (per primary)."""
        ids = list(student_ids)
        pipe = self.client.pipeline(transaction=False)
        for student_id in ids:
            pipe.get(keys.student_key(student_id, self.prefix))
        raw = await pipe.execute()
        return {s: None if value is None else StudentState.from_bytes(value) for s, value in zip(ids, raw)}

    async def write(self, states: Iterable[StudentState]) -> None:
        """Write each state whole under its own key (with the TTL, if any), in one round trip (per primary)."""
        expiry_s = self.state_ttl_s or None
        pipe = self.client.pipeline(transaction=False)
        for state in states:
            pipe.set(keys.student_key(state.student_id, self.prefix), state.to_bytes(), ex=expiry_s)
        await pipe.execute()

    async def delete(self, student_id: str) -> bool:
        """Erase a student's state; True when there was one."""
        return bool(await self.client.delete(keys.student_key(student_id, self.prefix)))

    async def write_model_vocab(self, model_version: str, payload: dict[str, Any]) -> None:
        await self.client.set(keys.model_vocab_key(model_version, self.prefix), json.dumps(payload))

    async def read_model_vocab(self, model_version: str) -> dict[str, Any] | None:
        """What ``write_model_vocab`` stored for ``model_version`` (None: nothing); ``StreamError`` if it is not JSON."""
        raw = await self.client.get(keys.model_vocab_key(model_version, self.prefix))
        if raw is None:
            return None
        try:
            payload: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise StreamError(f"{keys.model_vocab_key(model_version, self.prefix)}: not a stream-kt vocabulary") from None
        return payload

    async def delete_prefix(self) -> int:
        """Delete every key under this store's prefix (a demo's or a benchmark's own keys); return how many."""
        doomed = [key async for key in self.client.scan_iter(match=keys.prefix_pattern(self.prefix), count=1000)]
        for start in range(0, len(doomed), 1000):
            pipe = self.client.pipeline(transaction=False)
            for key in doomed[start : start + 1000]:
                pipe.delete(key)  # one key per command: a cluster routes each to its slot
            await pipe.execute()
        return len(doomed)

    async def close(self) -> None:
        await self.client.aclose()
