"""The suite's driver: one stream, sent in phases, each phase injecting one kind of fault.

  1. kills       SIGKILL of a member while it works through a burst of events, restarted at once
  2. rebalances  members join and leave while events trickle in (SIGTERM: leaves at once;
                 SIGKILL: its partitions wait out the session timeout)
  3. redis       the suite's redis-server stopped for seconds (SIGTERM, SHUTDOWN NOSAVE,
                 SIGKILL) while events trickle in, restarted on the same port and AOF
  4. broker      Apache Kafka killed with SIGKILL while the members work through a burst,
                 restarted on the same log directory; tansu restarted the same way (S3
                 storage), or in memory after draining, going on with new topics
                 (see ``restart_memory_broker``)
  5. tail        the rest at once; then every member is stopped with SIGTERM

With ``--ha`` Redis is a primary, a replica and three Sentinels (serve follows them
through a ``redis+sentinel://`` URL, ``KT_REDIS_MIN_REPLICAS`` 1 unless told) and Kafka
three nodes (replication factor 3, ``min.insync.replicas`` 2).  Phases 3 and 4 then
inject their high-availability faults instead of the single servers' outages:

  3. redis       Redis failovers: the replica's link cut (it falls behind, as a lagging
                 replica does), answers go on for a moment, the primary is SIGKILLed; the
                 Sentinels promote the replica and the killed node comes back, empty, as
                 the new primary's replica.  With 1 replica required, the batches written
                 meanwhile are not committed and are redone; with 0 they are lost
  4. broker      the node leading the most input partitions SIGKILLed mid-burst while
                 events keep coming; restarted on its own log directory once everything
                 sent is answered, and every replica in sync again before the next kill

Poison (every kind of ``workload.POISON``), fuzzed messages (``fuzz.py``: answered or
dead-lettered, as the decoder says) and out-of-order timestamps are mixed into the
stream from start to end.  Fault moments are seeded random fractions of what is
answered, so each lands mid-stream.  A supervisor restarts any member that exits on
its own (counted as a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stream_kt.checkpoint import load_checkpoint
from stream_kt.progress import progress_bar
from stream_kt.service.exceptions import StreamError
from stream_kt.service.kafka_io import committed_offsets, ensure_topics
from stream_kt.settings import StreamSettings
from stream_kt.tools.brokers import KAFKA_VERSION
from stream_kt.tools.processes import RedisServer, SentinelGroup

from . import workload
from .services import Broker, Group
from .traffic import Collector, Sender
from .verify import Tally, Verdict, check, read_states

PARTITIONS = 4
INPUT_TOPIC_CONFIG = {
    "max.message.bytes": str(8 << 20)
}  # the giant poison events (5 MB) get in; their dead letters must fit 1 MB
STALL_S = 45.0  # no answer for this long: something is lost (a restart or an outage takes under 20 s)


@dataclass(frozen=True)
class Profile:
    name: str
    students: int
    events_per_student: int
    kills: int
    instances: int  # most members at once in the rebalance phase (2 or 3)
    redis_outages: tuple[tuple[str, float], ...]  # (how it stops, seconds down)
    broker_restarts: int
    broker_down_s: float
    trickle_s: dict[str, float]  # phases that trickle: how long each spreads its sending over
    poison_rate: float = 0.03
    fuzz_rate: float = 0.03
    out_of_order_rate: float = 0.05
    time_limit_s: float = 600.0
    batch_size: int = 32
    redis_failovers: int = 2  # with --ha, instead of redis_outages
    leader_kills: int = 2  # with --ha, instead of broker_restarts


SHORT = Profile(
    "short",
    students=32,
    events_per_student=45,
    kills=2,
    instances=2,
    redis_outages=(("sigterm", 3.0),),
    broker_restarts=1,
    broker_down_s=2.0,
    trickle_s={"rebalances": 14, "redis": 8},
    time_limit_s=170,
    redis_failovers=1,
    leader_kills=1,
)
FULL = Profile(
    "full", students=120, events_per_student=100, kills=5, instances=3,
    redis_outages=(("sigterm", 6.0), ("shutdown-nosave", 4.0), ("sigkill", 5.0)), broker_restarts=2, broker_down_s=4.0,
    trickle_s={"rebalances": 70, "redis": 45}, time_limit_s=900,
)  # fmt: skip
PHASE_SHARES = {"kills": 0.3, "rebalances": 0.25, "redis": 0.2, "broker": 0.15, "tail": 0.1}
HA_EXTRA_S = 150.0  # --ha: three JVMs to start, and each failover's pause, on top of the profile's time limit
HA_REPLICA_TIMEOUT_MS = 500  # --ha: KT_REDIS_REPLICA_TIMEOUT_MS, the WAIT of each batch
# a replica cut off this long at most before the kill (Sentinel repairs its link after failover-timeout, 5 s)
CUT_OFF_MOST_S = 3.0

LOG_COUNTS = {  # what the processors' logs say about the faults
    "retried_batches": re.compile(r"attempt \d+ failed"),
    "skipped_replays": re.compile(r"skipped, student .* applied it before"),
    "dropped_polls": re.compile(r"polled before a rebalance, dropped"),
    "refused_commits": re.compile(r"commit refused"),
    "rebalance_revokes": re.compile(r"partitions revoked"),
}


@dataclass
class Faults:
    processor_kills: int = 0
    kills_with_backlog: int = 0  # kills while events of the burst were still unanswered (a cut batch)
    joins: int = 0
    leaves_sigterm: int = 0
    leaves_sigkill: int = 0
    redis_outages: int = 0
    redis_down_s: float = 0.0
    redis_outage_crashes: int = 0
    broker_restarts: int = 0
    broker_kills: int = 0  # restarts that began with a SIGKILL of the broker
    broker_down_s: float = 0.0
    broker_restart_crashes: int = 0
    broker_restart_survivors: int = 0
    broker_restarts_with_backlog: int = 0  # restarts while events of the burst were still unanswered
    broker_restart_stop_codes: list = field(
        default_factory=list
    )  # memory: exit codes of the SIGTERMs that move members to the new topics
    poison_events: int = 0
    fuzz_events: int = 0
    out_of_order_events: int = 0
    # --ha
    redis_failovers: int = 0  # completed: primary killed, replica promoted, the killed one back as a replica
    redis_failover_s: list = field(default_factory=list)  # from each kill to the promotion every Sentinel names
    redis_cut_off_s: list = field(default_factory=list)  # how long the replica received nothing before each kill
    redis_failover_crashes: int = 0
    kafka_leader_kills: int = 0  # completed: the leader killed, its partitions led by another node, restarted, in sync
    kafka_killed_nodes: list = field(default_factory=list)
    kafka_leader_pause_s: list = field(default_factory=list)  # from each kill until everything sent was answered
    kafka_leader_kill_crashes: int = 0


@dataclass
class Outcome:
    profile: str
    seed: int
    broker: str
    broker_storage: str
    faults: Faults = field(default_factory=Faults)
    phases: dict[str, float] = field(default_factory=dict)  # name -> seconds
    verdict: Verdict | None = None
    tally: Tally | None = None
    events_in: int = 0
    member_starts: int = 0
    processor_crashes: list[str] = field(default_factory=list)
    supervisor_restarts: int = 0
    restart_failures: list[str] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)  # of the final SIGTERMs
    log_counts: dict[str, int] = field(default_factory=dict)
    committed_matches_end: bool | None = None
    timed_out: str | None = None
    stalls: list[str] = field(default_factory=list)  # waits that gave up: nothing answered for STALL_S
    error: str | None = None
    broker_note: str = ""
    work_dir: str = ""
    elapsed_s: float = 0.0
    ha: bool = False
    redis_min_replicas: int = 0
    planned_failovers: int = 0
    planned_leader_kills: int = 0


class Suite:
    def __init__(
        self,
        profile: Profile,
        seed: int,
        work_dir: Path,
        broker: str,
        storage: str,
        progress: bool = True,
        ha: bool = False,
        redis_min_replicas: int = 0,
    ) -> None:
        self.profile, self.seed, self.work_dir, self.progress = profile, seed, work_dir, progress
        self.rng = random.Random(seed)
        self.outcome = Outcome(
            profile.name,
            seed,
            broker,
            storage if broker == "tansu" else "disk",
            work_dir=str(work_dir),
            ha=ha,
            redis_min_replicas=redis_min_replicas,
        )
        if ha:
            self.outcome.planned_failovers, self.outcome.planned_leader_kills = (
                profile.redis_failovers,
                profile.leader_kills,
            )
        self.ha = ha
        self.sentinels = SentinelGroup(work_dir / "redis") if ha else None
        self.redis: RedisServer | SentinelGroup = self.sentinels or RedisServer(work_dir / "redis")
        self.broker = Broker(broker, storage, work_dir, nodes=3 if ha else 1)
        self.tally = Tally()
        self.collector: Collector | None = None
        self.sender: Sender | None = None
        self.group: Group | None = None
        self.settings: StreamSettings | None = None
        self.epoch = 0

    # ------------------------------------------------------------ the whole run

    async def run(self, deadline: float) -> Outcome:
        """Set up, run the phases until ``deadline`` (monotonic), then stop, check and tear down whatever happened."""
        started = time.monotonic()
        self.deadline = deadline
        try:
            await self.set_up()
            try:
                await asyncio.wait_for(self.phases(), max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                self.outcome.timed_out = "the time limit ran out"
            except Exception as exc:  # a member that never started, a client error: report it, still check what we have
                self.note_error(exc)
            await self.finish()
        except Exception as exc:
            self.note_error(exc)
        finally:
            await self.tear_down()
            self.outcome.elapsed_s = round(time.monotonic() - started, 1)
        return self.outcome

    def note_error(self, exc: Exception) -> None:
        """The first error is reported; every traceback goes to ``error.txt`` in the work directory."""
        self.outcome.error = self.outcome.error or f"{type(exc).__name__}: {exc}"
        with open(self.work_dir / "error.txt", "a") as out:
            traceback.print_exception(exc, file=out)

    async def set_up(self) -> None:
        p = self.profile
        with self.timed("setup"):
            self.checkpoint_dir = workload.make_checkpoint(self.work_dir / "checkpoint", self.seed)
            self.checkpoint = load_checkpoint(self.checkpoint_dir)
            self.sequences = workload.students(p.students, p.events_per_student, self.seed, p.out_of_order_rate)
            self.messages = workload.plan(self.sequences, self.seed, p.poison_rate, p.fuzz_rate)
            self.references = workload.reference(
                self.checkpoint, self.sequences
            )  # on this thread: torch in a worker thread aborts at exit
            self.outcome.faults.poison_events = sum(not m.valid and m.kind != "fuzz" for m in self.messages)
            self.outcome.faults.fuzz_events = sum(m.kind == "fuzz" for m in self.messages)
            self.outcome.faults.out_of_order_events = workload.out_of_order_count(self.sequences)
            await asyncio.to_thread(self.redis.start)
            await asyncio.to_thread(self.broker.start)
            self.settings = StreamSettings(
                bootstrap=self.broker.bootstrap,
                redis_url=self.redis.url,  # with --ha: redis+sentinel://
                in_topic="fs.answers",
                out_topic="fs.mastery",
                dlq_topic="fs.answers.dlq",
                group_id="fault-suite",
                key_prefix="fs",
                batch_size=p.batch_size,
                max_wait_ms=5,
                partitions=PARTITIONS,
                metrics_port=0,  # several members on one machine
            )
            if self.ha:  # the Sentinels' URL; the topics the suite creates get three replicas, two in sync
                self.settings = self.settings.replace(
                    redis_min_replicas=self.outcome.redis_min_replicas,
                    redis_replica_timeout_ms=HA_REPLICA_TIMEOUT_MS,
                    replication_factor=3,
                    min_insync_replicas=2,
                )
            await self.open_topics()
            (self.work_dir / "logs").mkdir(exist_ok=True)
            self.group = Group(self.settings, self.checkpoint_dir, self.work_dir / "logs")

    async def open_topics(self) -> None:
        """Create the topics and start the sender and collector on them."""
        assert self.settings is not None
        replicas = {
            "replication_factor": self.settings.replication_factor,
            "min_insync_replicas": self.settings.min_insync_replicas,
        }
        await ensure_topics(
            self.settings.bootstrap, [self.settings.in_topic], PARTITIONS, configs=INPUT_TOPIC_CONFIG, **replicas
        )
        await ensure_topics(
            self.settings.bootstrap, [self.settings.out_topic, self.settings.dlq_topic], PARTITIONS, **replicas
        )  # Kafka's defaults: 1 MB records
        if self.broker.cluster is not None:  # every partition led and replicated before the first client asks
            topics = [self.settings.in_topic, self.settings.out_topic, self.settings.dlq_topic]
            await asyncio.to_thread(self.broker.cluster.wait_in_sync, topics, 60)
        self.sender = self.sender or Sender(self.settings.bootstrap, self.settings.in_topic)
        self.sender.topic = self.settings.in_topic
        await self.sender.start()
        self.collector = await self.start_collector()

    async def start_collector(self, attempts: int = 3) -> Collector:
        """The collector, started; a start that fails or hangs (a cluster's metadata not yet settled) is given up
        and tried again with a new client."""
        assert self.settings is not None
        for attempt in range(1, attempts + 1):
            collector = Collector(self.settings.bootstrap, self.settings.out_topic, self.settings.dlq_topic)
            try:
                await asyncio.wait_for(collector.start(), 60)
                return collector
            except (StreamError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(collector.stop(), 10)
                if attempt == attempts:
                    raise
                with open(self.work_dir / "error.txt", "a") as out:
                    out.write(f"collector start, attempt {attempt} of {attempts}: {type(exc).__name__}: {exc}\n")
                await asyncio.sleep(1)
        raise AssertionError("unreachable")

    async def phases(self) -> None:
        shares = list(PHASE_SHARES.items())
        bounds, start = [], 0
        for i, (name, share) in enumerate(shares):
            end = len(self.messages) if i == len(shares) - 1 else start + round(share * len(self.messages))
            bounds.append((name, self.messages[start:end]))
            start = end
        scripts: dict[str, Callable[[list], Awaitable[None]]] = {
            "kills": self.kills,
            "rebalances": self.rebalances,
            "redis": self.redis_failovers if self.ha else self.redis_outages,
            "broker": self.leader_kills if self.ha else self.broker_restarts,
            "tail": self.tail,
        }
        assert self.group is not None
        await asyncio.to_thread(self.group.start, "A")
        for name, chunk in bounds:
            with self.timed(name):
                await self.phase(name, chunk, scripts[name])

    async def phase(self, name: str, chunk: list, script: Callable[[list], Awaitable[None]]) -> None:
        """Run ``script`` (which sends ``chunk``, injecting its faults), then wait until all
        of ``chunk`` is answered."""
        assert self.sender is not None
        self.phase_first = len(self.sender.sent)
        self.bar = progress_bar(
            total=len(chunk), desc=f"{name:<10}", unit="msg", disable=not self.progress, leave=True, mininterval=0.3
        )
        try:
            await script(chunk)
            await self.answered(len(chunk), f"{name}: every message answered")
        finally:
            self.bar.close()

    @contextlib.asynccontextmanager
    async def trickling(self, chunk: list, seconds: float):
        """Send ``chunk`` spread over ``seconds`` while the block injects its faults."""
        assert self.sender is not None
        sending = asyncio.create_task(self.sender.send(chunk, rate_per_s=max(20.0, len(chunk) / seconds)))
        try:
            yield
            await sending
        finally:
            if not sending.done():
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)

    # ------------------------------------------------------------ waiting, with supervision

    async def answered(self, count: int, what: str) -> bool:
        """Wait until ``count`` of this phase's messages are answered; restart crashed members meanwhile.

        False when nothing more was answered for ``STALL_S``: the stall is recorded (a lost
        event stalls its phase for good) and the run goes on, so one bug does not hide the
        other faults' results.
        """
        assert self.sender is not None and self.group is not None
        last_done, last_progress, last_supervised = -1, time.monotonic(), 0.0
        while True:
            done = self.show_progress()
            if done >= count:
                return True
            now = time.monotonic()
            if done != last_done:
                last_done, last_progress = done, now
            elif now - last_progress > STALL_S:
                self.outcome.stalls.append(f"{what}: {done} of {count} answered, then nothing for {STALL_S:.0f} s")
                return False
            if now - last_supervised > 1.0:
                await asyncio.to_thread(self.group.supervise)
                last_supervised = time.monotonic()
            await asyncio.sleep(0.1)

    async def at_fraction(self, chunk: list, fraction: float, what: str) -> None:
        await self.answered(max(1, int(fraction * len(chunk))), what)
        await asyncio.sleep(self.rng.uniform(0, 0.05))  # somewhere inside a batch's steps

    def slots(self, count: int) -> list[float]:
        """``count`` random fractions, one in each of ``count`` equal slots of (0, 1)."""
        return [self.rng.uniform((k + 0.3) / (count + 1), (k + 0.7) / (count + 1)) for k in range(count)]

    # ------------------------------------------------------------ the faults

    async def kills(self, chunk: list) -> None:
        """SIGKILL a random member while it works through a burst; restart it at once."""
        assert self.group is not None
        async for burst in self.bursts(chunk, self.profile.kills):
            backlog = await self.into_burst(burst)
            running = self.group.running()
            if not running:
                continue
            victim = self.rng.choice(running)
            await asyncio.to_thread(self.group.kill, victim)
            self.outcome.faults.processor_kills += 1
            self.outcome.faults.kills_with_backlog += backlog
            await asyncio.to_thread(self.group.start, victim.name)

    async def bursts(self, chunk: list, faults: int):
        """Split ``chunk`` into ``faults`` + 1 parts; yield the first ``faults`` (one per fault), then send the last."""
        assert self.sender is not None
        size = len(chunk) // (faults + 1)
        for k in range(faults):
            yield chunk[k * size : (k + 1) * size]
        await self.sender.send(chunk[faults * size :], rate_per_s=None)

    async def into_burst(self, burst: list, most: float = 0.7) -> bool:
        """Send ``burst`` at once (all delivered, none in flight), then wait until a random part (up to ``most``)
        of it is answered.

        A fault injected now finds the members busy with the rest: mid-batch, not idle between polls.
        """
        assert self.sender is not None
        first = len(self.sender.sent)
        await self.sender.send(burst, rate_per_s=None)
        sent = self.sender.sent[first:]
        target = int(self.rng.uniform(0.0, most) * len(sent))
        deadline = time.monotonic() + 60
        while self.answered_in(sent) < target and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        self.show_progress()
        return self.answered_in(sent) < len(sent)  # True: the fault comes with work left

    def answered_in(self, sent: list) -> int:
        if self.collector is not None:
            self.tally.update(self.collector)
        return self.tally.answered(sent)

    def show_progress(self) -> int:
        """This phase's answered messages, shown on its bar."""
        assert self.sender is not None
        done = self.answered_in(self.sender.sent[self.phase_first :])
        self.bar.update(done - self.bar.n)
        return done

    async def rebalances(self, chunk: list) -> None:
        """Members join and leave: "join", "leave" (SIGTERM) or "crash" (SIGKILL: its partitions wait
        out the session timeout)."""
        assert self.group is not None
        moves = (
            ["join", "leave"]
            if self.profile.instances <= 2
            else ["join", "join", "leave", "join", "crash", "join", "leave"]
        )
        names = iter("BCDEFGH")
        async with self.trickling(chunk, self.profile.trickle_s["rebalances"]):
            for move, fraction in zip(moves, self.slots(len(moves))):
                await self.rebalance_move(chunk, move, fraction, names)

    async def rebalance_move(self, chunk: list, move: str, fraction: float, names: Iterator[str]) -> None:
        assert self.group is not None
        await self.at_fraction(chunk, fraction, f"rebalance ({move})")
        running = self.group.running()
        if move == "join" and len(running) < self.profile.instances:
            await asyncio.to_thread(self.group.start, next(names))
            self.outcome.faults.joins += 1
        elif move in ("leave", "crash") and len(running) > 1:
            member = self.rng.choice(running)
            if move == "leave":
                await asyncio.to_thread(self.group.stop, member)
                self.outcome.faults.leaves_sigterm += 1
            else:
                await asyncio.to_thread(self.group.kill, member)
                self.outcome.faults.leaves_sigkill += 1

    async def redis_outages(self, chunk: list) -> None:
        async with self.trickling(chunk, self.profile.trickle_s["redis"]):
            for (how, down_s), fraction in zip(self.profile.redis_outages, self.slots(len(self.profile.redis_outages))):
                await self.redis_outage(chunk, how, down_s, fraction)

    async def redis_outage(self, chunk: list, how: str, down_s: float, fraction: float) -> None:
        """Stopped ``how``, down ``down_s``, back on the same port and append-only file; no
        member may exit meanwhile."""
        assert self.group is not None
        await self.at_fraction(chunk, fraction, f"redis outage ({how})")
        crashes = len(self.group.crashes)
        members = self.group.running()
        await asyncio.to_thread(self.redis.restart, how, down_s)
        self.outcome.faults.redis_outages += 1
        self.outcome.faults.redis_down_s += down_s
        died = [m for m in members if not m.alive and not m.expected_exit]
        await asyncio.to_thread(self.group.supervise)
        self.outcome.faults.redis_outage_crashes += max(len(died), len(self.group.crashes) - crashes)

    async def redis_failovers(self, chunk: list) -> None:
        async with self.trickling(chunk, self.profile.trickle_s["redis"]):
            for fraction in self.slots(self.profile.redis_failovers):
                await self.redis_failover(chunk, fraction)

    async def redis_failover(self, chunk: list, fraction: float) -> None:
        """The replica cut off (answers go on, written to the primary alone), the primary SIGKILLed, the replica
        promoted, the killed node back as its replica, every Sentinel seeing it; no member may exit meanwhile."""
        assert self.group is not None and self.sentinels is not None
        group = self.sentinels
        await self.at_fraction(chunk, fraction, "redis failover")
        crashes, members = len(self.group.crashes), self.group.running()
        primary = await asyncio.to_thread(lambda: group.primary)
        (replica,) = await asyncio.to_thread(group.replicas)
        await asyncio.to_thread(group.cut_off, replica)
        cut_at, before = time.monotonic(), self.show_progress()
        # some answers after the cut (their states reach the primary alone), then a seeded moment more
        while self.show_progress() == before and time.monotonic() - cut_at < CUT_OFF_MOST_S / 2:
            await asyncio.sleep(0.02)
        await asyncio.sleep(self.rng.uniform(0.2, CUT_OFF_MOST_S / 2))
        killed = time.monotonic()
        self.outcome.faults.redis_cut_off_s.append(round(killed - cut_at, 2))
        await asyncio.to_thread(primary.kill)
        new = await asyncio.to_thread(group.wait_promoted, primary.port, 60)
        self.outcome.faults.redis_failover_s.append(round(time.monotonic() - killed, 1))
        await asyncio.to_thread(group.restart_as_replica, primary, new, 60)
        await asyncio.to_thread(group.wait_monitored, 60)  # before the next failover: every Sentinel knows the replica
        self.outcome.faults.redis_failovers += 1
        died = [m for m in members if not m.alive and not m.expected_exit]
        await asyncio.to_thread(self.group.supervise)
        self.outcome.faults.redis_failover_crashes += max(len(died), len(self.group.crashes) - crashes)

    async def leader_kills(self, chunk: list) -> None:
        async for burst in self.bursts(chunk, self.profile.leader_kills):
            half = len(burst) // 2
            self.outcome.faults.broker_restarts_with_backlog += await self.into_burst(burst[:half], most=0.3)
            await self.kill_leader(burst[half:])

    async def kill_leader(self, more: list) -> None:
        """SIGKILL the node leading the most input partitions (no controlled shutdown) while the members work through
        a burst, send ``more`` meanwhile (acks=all: two replicas of three suffice), wait until everything sent is
        answered, then restart it on its own log directory and wait until every replica is in sync again."""
        assert (
            self.sender is not None
            and self.group is not None
            and self.settings is not None
            and self.broker.cluster is not None
        )
        cluster, topic = self.broker.cluster, self.settings.in_topic
        crashes, members = len(self.group.crashes), self.group.running()
        leaders = await asyncio.to_thread(cluster.leaders, topic)
        node = Counter(leaders.values()).most_common(1)[0][0]
        led = sorted(p for p, n in leaders.items() if n == node)
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill, node)
        self.outcome.faults.kafka_killed_nodes.append(node)
        await self.sender.send(more, rate_per_s=None)
        if await self.answered(
            len(self.sender.sent) - self.phase_first, f"leader kill (node {node}): every message answered"
        ):  # a stall is reported
            self.outcome.faults.kafka_leader_pause_s.append(round(time.monotonic() - killed, 1))
        now = await asyncio.to_thread(cluster.leaders, topic)
        moved = all(now[p] not in (node, -1) for p in led)
        await asyncio.to_thread(cluster.restart, node)
        await asyncio.to_thread(cluster.wait_in_sync, None, 180)  # before the next kill: no write may need the node
        # completed: its partitions moved, it came back, every replica in sync
        self.outcome.faults.kafka_leader_kills += moved
        died = [m for m in members if not m.alive and not m.expected_exit]
        await asyncio.to_thread(self.group.supervise)
        self.outcome.faults.kafka_leader_kill_crashes += max(len(died), len(self.group.crashes) - crashes)

    async def broker_restarts(self, chunk: list) -> None:
        async for burst in self.bursts(chunk, self.profile.broker_restarts):
            if self.broker.persistent:
                self.outcome.faults.broker_restarts_with_backlog += await self.into_burst(burst, most=0.3)
                await self.restart_persistent_broker()
            else:
                await self.sender.send(burst, rate_per_s=None)
                await self.restart_memory_broker()

    async def restart_persistent_broker(self) -> None:
        """Mid-burst: the members keep running through the outage; their backlog waits in the broker's storage.

        Nothing of ours is in flight (a produce retried across the restart could be written
        twice, which would be the sender's duplicate, not the processor's).
        """
        assert self.sender is not None and self.group is not None
        before = self.group.running()
        crashes = len(self.group.crashes)
        kill = (
            self.broker.kind == "kafka" or self.rng.random() < 0.5
        )  # Kafka: always SIGKILL, no draining first; tansu: SIGTERM or SIGKILL
        down_since = time.monotonic()
        await asyncio.to_thread(self.broker.stop, kill)
        self.outcome.faults.broker_kills += kill
        await self.sender.stop()
        await asyncio.sleep(self.profile.broker_down_s)
        await asyncio.to_thread(self.broker.start)
        self.outcome.faults.broker_restarts += 1
        self.outcome.faults.broker_down_s += round(time.monotonic() - down_since, 1)  # until it serves again
        await self.sender.start()
        await asyncio.sleep(5)  # long enough for a member that cannot cope to exit
        await asyncio.to_thread(self.group.supervise)
        self.outcome.faults.broker_restart_crashes += len(self.group.crashes) - crashes
        self.outcome.faults.broker_restart_survivors += sum(m.alive for m in before)

    async def restart_memory_broker(self) -> None:
        """In memory the restart loses every topic and committed offset: drain first, then go on with new topics.

        New topic names, not the old ones recreated: a state's ``offsets`` remember the old
        topic's offsets under "topic/partition", and a recreated topic starts again at 0,
        so its first events would look like replays and be skipped.
        """
        assert self.sender is not None and self.group is not None and self.settings is not None
        await self.answered(len(self.sender.sent) - self.phase_first, "broker restart: drained")
        self.tally.update(self.collector)
        before = self.group.running()
        crashes = len(self.group.crashes)
        await self.collector.stop()
        await self.sender.stop()
        await asyncio.to_thread(self.broker.stop)
        await asyncio.sleep(self.profile.broker_down_s)
        await asyncio.to_thread(self.broker.start)
        self.outcome.faults.broker_restarts += 1
        self.outcome.faults.broker_down_s += self.profile.broker_down_s
        await asyncio.sleep(5)
        self.outcome.faults.broker_restart_crashes += sum(not m.alive for m in before)
        self.outcome.faults.broker_restart_survivors += sum(m.alive for m in before)
        for member in self.group.running():  # they are on topics that no longer exist
            self.outcome.faults.broker_restart_stop_codes.append(await asyncio.to_thread(self.group.stop, member, 30))
        self.epoch += 1
        self.settings = self.settings.replace(
            in_topic=f"fs.answers.e{self.epoch}",
            out_topic=f"fs.mastery.e{self.epoch}",
            dlq_topic=f"fs.answers.dlq.e{self.epoch}",
        )
        self.group.settings = self.settings
        self.group.crashes[crashes:] = []
        await self.open_topics()
        await asyncio.to_thread(self.group.start, "A")

    async def tail(self, chunk: list) -> None:
        """The rest at once; nothing injected."""
        assert self.sender is not None
        await self.sender.send(chunk, rate_per_s=None)

    # ------------------------------------------------------------ end

    async def finish(self) -> None:
        assert self.group is not None
        with self.timed("stop"):
            for member in self.group.running():
                stop_s = 5.0 if self.outcome.timed_out else 60.0  # after a time-out little time is left
                self.outcome.exit_codes.append(await asyncio.to_thread(self.group.stop, member, stop_s))
            if self.collector is not None:
                await asyncio.sleep(0.5)  # the last outputs of the stopped members
                self.tally.update(self.collector)
            if self.broker.persistent or self.epoch > 0:
                with contextlib.suppress(
                    Exception
                ):  # informational: a broker that never came back fails the checks anyway
                    self.outcome.committed_matches_end = await asyncio.wait_for(self.committed_matches_end(), 15)
        with self.timed("verify"):
            sent = self.sender.sent if self.sender else []
            students = sorted({m.student_id for m in self.messages if m.valid})
            states = await asyncio.to_thread(
                read_states, self.redis.url, self.settings.key_prefix, students, self.checkpoint
            )  # --ha: through the Sentinels
            by_id = {s.student_id: s for s in self.sequences}
            self.outcome.verdict = check(self.tally, sent, by_id, self.references, states, self.checkpoint.version)
        self.outcome.tally = self.tally
        self.outcome.events_in = len(sent)
        self.outcome.member_starts = self.group.started
        self.outcome.processor_crashes = list(self.group.crashes)
        self.outcome.supervisor_restarts = self.group.supervisor_restarts
        self.outcome.restart_failures = list(self.group.restart_failures)
        text = self.group.log_text()
        self.outcome.log_counts = {name: len(pattern.findall(text)) for name, pattern in LOG_COUNTS.items()}
        self.outcome.broker_note = {
            "kafka": f"Apache Kafka {KAFKA_VERSION}, SIGKILLed mid-stream and restarted on its log directory: "
            "topics, records and committed offsets survive"
            if not self.ha
            else f"Apache Kafka {KAFKA_VERSION}, three nodes (replication factor 3, min.insync.replicas 2): "
            "the leader of the most input partitions SIGKILLed mid-stream, restarted on its own log directory",
            "s3": "tansu with s3:// storage on a local S3 server (moto): "
            "topics, records and committed offsets survive the restart",
            "memory": "tansu in memory: a restart loses every topic and committed offset; "
            "the suite drained first and went on with new topics",
        }[self.broker.kind if self.broker.kind == "kafka" else self.broker.storage]

    async def committed_matches_end(self) -> bool:
        """After the final SIGTERMs the group's committed offsets equal the input's end
        offsets (from delivery reports)."""
        assert self.settings is not None and self.sender is not None
        end: dict[int, int] = {}
        for s in self.sender.sent:
            topic, partition, offset = s.source.rsplit("/", 2)
            if topic == self.settings.in_topic:
                end[int(partition)] = max(end.get(int(partition), 0), int(offset) + 1)
        committed = await committed_offsets(
            self.settings.bootstrap, self.settings.group_id, self.settings.in_topic, list(end)
        )
        return committed == end

    async def tear_down(self) -> None:
        for closing in (self.collector.stop if self.collector else None, self.sender.stop if self.sender else None):
            if closing is not None:
                with contextlib.suppress(
                    Exception
                ):  # TimeoutError too: a client that hangs is left to the process's exit
                    await asyncio.wait_for(closing(), 30)
        if self.group is not None:
            await asyncio.to_thread(self.group.kill_all)
        await asyncio.to_thread(self.redis.stop)
        await asyncio.to_thread(self.broker.close)

    @contextlib.contextmanager
    def timed(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.outcome.phases[name] = round(time.monotonic() - started, 1)

    def kill_all(self) -> None:
        """SIGKILL every process this suite started that still runs (the hard deadline, an interrupt)."""
        found = [
            *(self.redis.processes() if isinstance(self.redis, SentinelGroup) else [self.redis.process]),
            *self.broker.processes(),
        ]
        if self.group is not None:
            found += [m.serve.process for m in self.group.members]
        for process in found:
            if process is not None and process.poll() is None:
                process.kill()
