"""Thin adapter: student states in Redis, one key per student (``keys.student_key``).

One batch costs two round trips: a pipeline of GETs to read and a pipeline of SETs to
write, both ``transaction=False``.  Not MGET/MSET and not MULTI: those are multi-key
commands, which Redis Cluster refuses across hash slots; each student's key is
written whole, so each update is atomic on its own.

Errors are not retried here: a ``redis.RedisError`` reaches the processor, which
backs off and retries the whole batch (and commits nothing meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Iterable

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from stream_kt.stream import keys
from stream_kt.stream.exceptions import StreamError
from stream_kt.stream.state import StudentState

log = logging.getLogger(__name__)


class StudentStore:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    async def connect(cls, url: str, prefix: str, attempts: int = 5, first_delay_s: float = 0.25, socket_timeout_s: float = 5.0) -> "StudentStore":
        """Connect and PING, retrying a bounded number of times; raise ``StreamError`` after that."""
        # no client-side retries: the processor's batch retry logs every failure
        client = aioredis.Redis.from_url(url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s, retry=Retry(NoBackoff(), 0))
        delay_s = first_delay_s
        for attempt in range(1, attempts + 1):
            try:
                await client.ping()
                return cls(client, prefix)
            except redis.RedisError as exc:
                log.warning("redis %s: attempt %d/%d failed: %s", url, attempt, attempts, exc)
                if attempt == attempts:
                    await client.aclose()
                    raise StreamError(f"cannot reach Redis at {url}: {exc}") from None
                await asyncio.sleep(delay_s)
                delay_s *= 2
        raise AssertionError("unreachable")

    async def read(self, student_ids: Iterable[str]) -> dict[str, StudentState | None]:
        """States of ``student_ids`` (None for a student never seen), in one round trip."""
        ids = list(student_ids)
        pipe = self.client.pipeline(transaction=False)
        for student_id in ids:
            pipe.get(keys.student_key(student_id, self.prefix))
        raw = await pipe.execute()
        return {s: None if value is None else StudentState.from_bytes(value) for s, value in zip(ids, raw)}

    async def write(self, states: Iterable[StudentState]) -> None:
        """Write each state whole under its own key, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for state in states:
            pipe.set(keys.student_key(state.student_id, self.prefix), state.to_bytes())
        await pipe.execute()

    async def write_model_vocab(self, model_version: str, payload: dict) -> None:
        await self.client.set(keys.model_vocab_key(model_version, self.prefix), json.dumps(payload))

    async def close(self) -> None:
        await self.client.aclose()
