"""The processor's HTTP endpoint (``settings.metrics_port``): /metrics, /healthz, /readyz.

    /healthz  200 while the process and its event loop run: the liveness probe.  It checks
              neither the broker nor Redis: restarting pods does not fix an outage, and
              every restart is a rebalance.
    /readyz   200 once the model is loaded, and only while the broker and Redis answer
              (asked at each request, bounded by ``Readiness.timeout_s``); else 503 with
              the reason as the body.
    /metrics  the Prometheus text format of ``metrics.Metrics``.
    /quality  JSON: per model version, this process's online quality (since start, and
              over the recent window) and the fleet's (every processor's counts, read
              from Redis at each request); see ``quality.py``.

It runs on the processor's event loop, so a loop blocked for long fails /healthz too:
that is what the liveness probe is for.  A port already in use is logged as an error
and the processor runs on without the endpoint (several processes on one machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis
from aiokafka.errors import KafkaError
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from stream_kt.service.exceptions import StreamError
from stream_kt.service.metrics import Metrics
from stream_kt.service.quality import finite

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0


class Readiness:
    """What /readyz checks; ``run_processor`` fills it in as the model and the connections come up."""

    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s
        self.model_version: str | None = None
        self.redis_client: Any = None  # redis.asyncio client (single or cluster)
        self.kafka_client: Any = None  # the producer's aiokafka client (untyped)
        self.processor_problem: Callable[[], str | None] | None = None  # a batch stuck retrying

    async def problem(self) -> str | None:
        """Why the processor is not ready, or None."""
        if self.model_version is None:
            return "starting: model not loaded"
        if self.redis_client is None or self.kafka_client is None:
            return "not connected to Redis and Kafka (starting or stopping)"
        problems = [
            self.processor_problem() if self.processor_problem else None,
            *await asyncio.gather(self._redis_problem(), self._kafka_problem()),
        ]
        return "; ".join(p for p in problems if p) or None

    async def _redis_problem(self) -> str | None:
        try:
            await asyncio.wait_for(self.redis_client.ping(), self.timeout_s)
        except TimeoutError:
            return f"redis: no answer within {self.timeout_s:g} s"
        except (redis.RedisError, OSError) as exc:
            return f"redis unreachable: {type(exc).__name__}: {exc}"
        return None

    async def _kafka_problem(self) -> str | None:
        try:
            await asyncio.wait_for(self.kafka_client.fetch_all_metadata(), self.timeout_s)
        except TimeoutError:
            return f"kafka: no metadata within {self.timeout_s:g} s"
        except (KafkaError, OSError) as exc:
            return f"kafka unreachable: {type(exc).__name__}: {exc}"
        return None


class ObservabilityServer:
    def __init__(self, metrics: Metrics, readiness: Readiness, port: int, host: str = "0.0.0.0") -> None:
        self.metrics, self.readiness = metrics, readiness
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; ``StreamError`` (one line) when the port cannot be bound: serve without its probes would
        look dead or never ready."""
        try:
            self.server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise StreamError(
                f"metrics port {self.port}: cannot listen ({exc.strerror or exc}); free it, "
                "or set --metrics-port / KT_METRICS_PORT (0: no endpoint)"
            ) from None
        log.info("metrics, /healthz and /readyz on port %d", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of one request."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            problem = await self.readiness.problem()
            return (
                (503, "text/plain", f"not ready: {problem}\n".encode()) if problem else (200, "text/plain", b"ready\n")
            )
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        if path == "/quality":
            return await self.quality()
        return 404, "text/plain", b"not found: /metrics, /healthz, /readyz, /quality\n"

    async def quality(self) -> tuple[int, str, bytes]:
        versions: dict[str, dict[str, Any]] = {
            version: {"process": windows} for version, windows in self.metrics.quality_summary().items()
        }
        fleet_error = None
        if self.metrics.fleet_quality is not None:
            try:
                fleet = await asyncio.wait_for(self.metrics.fleet_quality(), self.readiness.timeout_s * 5)
            except (TimeoutError, redis.RedisError, OSError) as exc:
                fleet_error = f"{type(exc).__name__}: {exc}"
            else:
                for version, scores in fleet.items():
                    versions.setdefault(version, {})["fleet"] = scores.summary()
        body = {"versions": versions, "fleet_error": fleet_error}
        return 200, "application/json", (json.dumps(finite(body), sort_keys=True) + "\n").encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
            while (await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)).strip():
                pass  # headers: nothing here needs them
            method, target, _ = request_line.decode("latin-1").split(" ", 2)
            status, content_type, body = await self.respond(method, target.split("?", 1)[0])
            head = (
                f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError):
            pass  # a client that sends garbage or goes away gets nothing
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@contextlib.asynccontextmanager
async def serving(metrics: Metrics, readiness: Readiness, port: int) -> AsyncIterator[ObservabilityServer | None]:
    """The endpoint on ``port`` for the block's duration; port 0 serves nothing (yields None)."""
    if not port:
        yield None
        return
    server = ObservabilityServer(metrics, readiness, port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
