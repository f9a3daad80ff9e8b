"""Thin adapter: student states in Redis, one key per student (``keys.student_key``).

The one place any stream-kt code makes a Redis client: the processor, ``forget``,
``inspect``, the demo and the benchmarks all go through ``StudentStore``; the launchers,
the fault suite and the tests that need a blocking client get it from ``redis_client_sync``.

One batch costs two round trips: a pipeline of GETs to read and a pipeline of SETs to
write, both ``transaction=False``.  Not MGET/MSET and not MULTI: those are multi-key
commands, which Redis Cluster refuses across hash slots; each student's key is
written whole, so each update is atomic on its own.  On a cluster
(``settings.redis_cluster``) the same pipelines go through ``RedisCluster``, which
splits them by slot: one round trip per primary.

With ``state_ttl_s`` > 0 every SET carries ``EX state_ttl_s``: a student inactive that
long loses the state and starts again from the model's initial state.

Sentinel (``redis+sentinel://`` URLs, ``settings.sentinel_target``): the client asks the
Sentinels for the service's primary on every new connection, so after a failover the
batch's retry (below) reaches the promoted replica; a write that lands on a demoted
primary fails (READONLY) and is retried the same way.

Durability (``min_replicas`` > 0): the fenced write and ``WAIT min_replicas timeout``
go in one pipeline, on one connection (WAIT counts the replicas that have the writes of
its own connection), so a write that returns has reached that many replicas;
fewer raise ``ReplicasNotReached``, a ``RedisError``: the processor retries the batch
and commits nothing.  Not on a Redis Cluster (``settings._check`` refuses it).

Errors are not retried here: a ``redis.RedisError`` reaches the processor, which
backs off and retries the whole batch (and commits nothing meanwhile).  The URL's
password never reaches a log line or an error (``settings.mask_url``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.sentinel import Sentinel as SyncSentinel

from stream_kt.service import keys
from stream_kt.service.exceptions import StreamError
from stream_kt.service.quality import Scores
from stream_kt.service.state import EVENTS_BYTE, StudentState, decode_state, read_header
from stream_kt.settings import SENTINEL_SCHEMES, StreamSettings, mask_url, sentinel_target

log = logging.getLogger(__name__)

# KEYS: student keys; ARGV: ttl_s, then (blob, events applied) per key.  Sets each key unless its stored
# state (schema 2 or 3: the u64 at byte 40) has applied as many events or more; returns the 1-based indexes refused.
# A schema-1 state (msgpack) or a missing key never refuses: the write upgrades or creates it.
FENCED_SET = f"""
local ttl = tonumber(ARGV[1])
local refused = {{}}
for i, key in ipairs(KEYS) do
  local blob, events = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  local head = redis.call('GETRANGE', key, 0, {EVENTS_BYTE + 7})
  local magic = string.sub(head, 1, 4)
  if (magic == 'KTS3' or magic == 'KTS2') and #head == {EVENTS_BYTE + 8} and struct.unpack('<I8', head, {EVENTS_BYTE + 1}) >= events then
    refused[#refused + 1] = i
  elseif ttl > 0 then
    redis.call('SET', key, blob, 'EX', ttl)
  else
    redis.call('SET', key, blob)
  end
end
return refused
"""  # noqa: E501 (the Lua script's fence condition: splitting it would change the script)

# KEYS: one quality hash; ARGV: how many integer fields, then (field, increment) pairs, integers first.
QUALITY_ADD = """
local ints = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  if (i - 2) / 2 < ints then
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

DELETE_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# what a Redis failure raises: RedisClusterException (a slot not covered, ...) is not a RedisError
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)


class ReplicasNotReached(redis.RedisError):
    """A batch's state writes reached fewer replicas than ``min_replicas`` within the timeout: retry the batch."""


class SentinelRedis(aioredis.Redis):
    """The client of a Sentinel service's primary (``Sentinel.master_for``); closing it closes
    the Sentinel clients too."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            await self.sentinels.aclose()


def redis_client(url: str, *, cluster: bool = False, socket_timeout_s: float = 5.0) -> aioredis.Redis | RedisCluster:
    """An asyncio client for ``url``: TLS with rediss://, ACL AUTH from user:password@; a Sentinel service's
    primary for redis+sentinel:// (the credentials and TLS are the Redis servers'; Sentinels are asked without)."""
    timeouts = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": socket_timeout_s}
    if url.partition("://")[0] in SENTINEL_SCHEMES:
        target = sentinel_target(url)
        sentinels = Sentinel(list(target.sentinels), sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
        client: SentinelRedis = sentinels.master_for(
            target.service,
            redis_class=SentinelRedis,
            db=target.db,
            username=target.username,
            password=target.password,
            ssl=target.tls,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )
        client.sentinels = sentinels
        return client
    if cluster:
        # the cluster client keeps its own few retries: they follow MOVED/ASK and failovers
        return RedisCluster.from_url(url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s)
    # no client-side retries: the processor's batch retry logs every failure
    return aioredis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
    )


def redis_client_sync(
    url: str, *, cluster: bool = False, socket_timeout_s: float | None = None, connect_timeout_s: float | None = None
) -> redis.Redis | redis.RedisCluster:
    """A blocking client for ``url``, for tools and tests outside an event loop (a launcher's PING, a
    suite's final read).  None: no timeout; ``connect_timeout_s`` None: as ``socket_timeout_s``.
    A ``redis+sentinel://`` URL gives the client of the service's primary, as ``redis_client``."""
    if url.partition("://")[0] in SENTINEL_SCHEMES:
        target = sentinel_target(url)
        timeouts = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": connect_timeout_s or socket_timeout_s}
        sentinels = SyncSentinel(list(target.sentinels), sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
        primary: redis.Redis = sentinels.master_for(
            target.service, db=target.db, username=target.username, password=target.password, ssl=target.tls, **timeouts
        )  # type: ignore[no-untyped-call]
        return primary
    if cluster:
        return redis.RedisCluster.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s
        )
    return redis.Redis.from_url(url, socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s)


class StudentStore:
    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        prefix: str,
        state_ttl_s: int = 0,
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> None:
        self.client = client
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.prefix = prefix
        self.state_ttl_s = state_ttl_s
        self.cluster = isinstance(client, RedisCluster)
        self.fenced_set = client.register_script(FENCED_SET)  # one Redis: EVALSHA, loaded on NOSCRIPT
        self.fenced_sha: str | None = None  # a cluster: loaded on every primary before the first write
        self.delete_if_same = client.register_script(DELETE_IF_SAME)
        self.quality_add = client.register_script(QUALITY_ADD)

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
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> StudentStore:
        """Connect and PING, retrying a bounded number of times; raise ``StreamError`` after that."""
        shown = mask_url(url)
        delay_s = first_delay_s
        for attempt in range(1, attempts + 1):
            client = None
            try:
                client = redis_client(url, cluster=cluster, socket_timeout_s=socket_timeout_s)
                await client.ping()  # a cluster client maps the slots here
                return cls(client, prefix, state_ttl_s, min_replicas, replica_timeout_ms)
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
        return await cls.connect(
            settings.redis_url,
            settings.key_prefix,
            attempts,
            cluster=settings.redis_cluster,
            state_ttl_s=settings.state_ttl_s,
            min_replicas=settings.redis_min_replicas,
            replica_timeout_ms=settings.redis_replica_timeout_ms,
        )

    def names(self, student_ids: Sequence[str], shadow: str | None) -> list[str]:
        """The state keys of ``student_ids``: served states, or (``shadow``: a model version)
        that version's shadow states."""
        if shadow is None:
            return [keys.student_key(student_id, self.prefix) for student_id in student_ids]
        return [keys.shadow_key(student_id, shadow, self.prefix) for student_id in student_ids]

    async def read_blobs(self, student_ids: Sequence[str], shadow: str | None = None) -> list[bytes | None]:
        """The stored blobs of ``student_ids`` (None: never seen), in one round trip: MGET on one Redis;
        on a cluster, a pipeline of GETs (MGET may not span slots), one round trip per primary."""
        names = self.names(student_ids, shadow)
        if not names:
            return []
        if self.cluster:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.get(name)
            blobs: list[bytes | None] = await pipe.execute()
            return blobs
        return list(await self.client.mget(names))  # type: ignore[arg-type]  # bytes: the client does not decode

    async def write_blobs(
        self, student_ids: Sequence[str], blobs: Sequence[bytes], events: Sequence[int], shadow: str | None = None
    ) -> list[int]:
        """Write each state whole under its own key, unless the stored state is as new or newer; the refused indexes.

        Fencing: a write carries the student's events applied, and the script (``FENCED_SET``)
        compares it, inside Redis, with the stored state's before it sets the key: a member
        that lost its partitions (a zombie) and writes late cannot overwrite what the new
        owner wrote.  Each key is checked and set on its own, so the same script is
        Redis-Cluster-safe called once per key (a cluster) or once for all keys (one Redis,
        one round trip).  With ``state_ttl_s`` every SET carries ``EX``.  With ``min_replicas``
        the same round trip WAITs for that many replicas (``ReplicasNotReached`` if fewer).
        """
        names = self.names(student_ids, shadow)
        ttl = str(self.state_ttl_s)
        if self.min_replicas and not self.cluster:  # even with nothing to write: see fenced_set_and_wait
            args: list[bytes | str | int] = [ttl]
            for blob, count in zip(blobs, events):
                args += [blob, count]
            return await self.fenced_set_and_wait(names, args)
        if not student_ids:
            return []
        if self.cluster:
            if self.fenced_sha is None:
                self.fenced_sha = await self.client.script_load(FENCED_SET)  # on every primary
            pipe = self.client.pipeline(transaction=False)
            for name, blob, count in zip(names, blobs, events):
                # execute_command: redis-py's cluster pipeline refuses its evalsha() (the script may be missing on a
                # node); it is loaded on every primary above, and routed by its one key like any keyed command
                pipe.execute_command("EVALSHA", self.fenced_sha, 1, name, ttl, blob, count)
            try:
                results = await pipe.execute()
            except NoScriptError:  # a node restarted empty: load it again on the batch's retry
                self.fenced_sha = None
                raise
            refused = [i for i, result in enumerate(results) if result]
        else:
            args = [ttl]
            for blob, count in zip(blobs, events):
                args += [blob, count]
            refused = [int(i) - 1 for i in await self.fenced_set(keys=names, args=args)]
        return refused

    async def fenced_set_and_wait(self, names: list[str], args: list[bytes | str | int]) -> list[int]:
        """``FENCED_SET``, a PUBLISH, then WAIT, on one connection (one pipeline): the refused indexes, or
        ``ReplicasNotReached``.

        WAIT waits for the replication offset of its connection's last write.  The PUBLISH
        (replicated, and no key) is that write even when the script writes nothing: a batch
        whose states an earlier attempt (or a processor that crashed) already wrote, and
        which the fence refuses or step 4 skips, must still find them on the replicas.
        """
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            if names:
                pipe.execute_command("EVALSHA", self.fenced_set.sha, len(names), *names, *args)
            pipe.execute_command("PUBLISH", f"{self.prefix}:replicated", "")
            pipe.execute_command("WAIT", self.min_replicas, self.replica_timeout_ms)
            try:
                *results, _, acknowledged = await pipe.execute()
            except NoScriptError:  # a fresh server (a promoted replica, a restart): load it, once
                if attempt == 2:
                    raise
                await self.client.script_load(FENCED_SET)
                continue
            if int(acknowledged) < self.min_replicas:
                raise ReplicasNotReached(
                    f"state writes reached {acknowledged} of {self.min_replicas} replicas within "
                    f"{self.replica_timeout_ms} ms"
                )
            return [int(i) - 1 for i in results[0]] if results else []
        raise AssertionError("unreachable")

    async def read(self, student_ids: Iterable[str], sources: Iterable[str] = ()) -> dict[str, StudentState | None]:
        """States of ``student_ids`` as ``StudentState`` (None: never seen), of any schema, for tools and tests.

        A schema-2 or 3 window is named through its writer's vocabulary (and question list)
        where ``serve`` recorded it ("#<index>" where not); offsets of ``sources``
        ("topic/partition") are named.
        """
        ids, names = list(student_ids), list(sources)
        states: dict[str, StudentState | None] = {}
        vocabularies: dict[bytes, list[str] | None] = {}
        questions: dict[bytes, list[str] | None] = {}
        for student, blob in zip(ids, await self.read_blobs(ids)):
            if blob is None:
                states[student] = None
                continue
            header = read_header(blob)
            version = b"" if header is None else bytes(header["model_version"]).rstrip(b"\0")
            if version and version not in vocabularies:
                payload = await self.read_model_vocab(version.decode())
                vocabularies[version] = list(payload["ids"]) if payload and "ids" in payload else None
                questions[version] = list(payload.get("questions") or ()) if payload else None
            states[student] = decode_state(
                blob, student, vocabularies.get(version), None, names, questions.get(version)
            )
        return states

    async def quarantine(self, student_id: str, blob: bytes) -> None:
        """Move an unreadable state blob to ``keys.quarantine_key`` (replacing an older one of the student).

        Copied first, then the student's key deleted only if it still holds that blob (one
        key, one script: cluster-safe): nothing is lost, and an unreadable blob whose first
        bytes look like a newer state cannot fence the student's next write out.
        """
        await self.client.set(keys.quarantine_key(student_id, self.prefix), blob)
        await self.delete_if_same(keys=[keys.student_key(student_id, self.prefix)], args=[blob])

    async def delete(self, student_id: str) -> bool:
        """Erase a student's state, and its shadow states of every model version served
        here; True when there was one."""
        doomed = [keys.student_key(student_id, self.prefix)]
        async for key in self.client.scan_iter(match=keys.model_vocab_pattern(self.prefix), count=1000):
            version = keys.version_of_vocab_key(key.decode() if isinstance(key, bytes) else key, self.prefix)
            doomed.append(keys.shadow_key(student_id, version, self.prefix))
        deleted = 0
        for key in doomed:  # one key per command: a cluster routes each to its slot
            deleted += await self.client.delete(key)
        return bool(deleted)

    async def write_model_vocab(self, model_version: str, payload: dict[str, Any]) -> None:
        await self.client.set(keys.model_vocab_key(model_version, self.prefix), json.dumps(payload))

    async def read_model_vocab(self, model_version: str) -> dict[str, Any] | None:
        """What ``write_model_vocab`` stored for ``model_version`` (None: nothing);
        ``StreamError`` if it is not JSON."""
        raw = await self.client.get(keys.model_vocab_key(model_version, self.prefix))
        if raw is None:
            return None
        try:
            payload: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise StreamError(
                f"{keys.model_vocab_key(model_version, self.prefix)}: not a stream-kt vocabulary"
            ) from None
        return payload

    async def add_quality(self, model_version: str, scores: Scores) -> None:
        """Add a batch's online quality counts to the model version's hash: one key, one script (cluster-safe)."""
        fields = scores.to_fields()
        ints: list[tuple[str, str | int]] = [(name, value) for name, value in fields.items() if isinstance(value, int)]
        floats: list[tuple[str, str | int]] = [
            (name, repr(float(value))) for name, value in fields.items() if not isinstance(value, int)
        ]
        args: list[str | int] = [len(ints)]
        for name, value in ints + floats:
            args += [name, value]
        await self.quality_add(keys=[keys.quality_key(model_version, self.prefix)], args=args)

    async def read_quality(self) -> dict[str, Scores]:
        """Every model version's online quality counts under this prefix (what all processors added)."""
        found = {}
        start = len(keys.quality_key("", self.prefix))
        async for key in self.client.scan_iter(match=keys.quality_pattern(self.prefix), count=1000):
            name = key.decode() if isinstance(key, bytes) else key
            found[name[start:]] = Scores.from_fields(await self.client.hgetall(key))
        return dict(sorted(found.items()))

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
