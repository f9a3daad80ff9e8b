"""``scripts/fault-suite``: arguments, the hard deadline, the summary and the JSON line."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from stream_kt.tools.brokers import kafka_unavailable
from stream_kt.tools.processes import SentinelGroup

from .run import FULL, HA_EXTRA_S, SHORT, Outcome, Suite
from .services import S3Server

TEARDOWN_RESERVE_S = 25.0  # kept from the time limit for the final stop, the checks and the clean-up


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fault-suite", description="Inject faults into stream-kt serve and check nothing is lost or applied twice."
    )
    p.add_argument("--short", action="store_true", help="the reduced form for CI (under ~2 minutes)")
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the students, the poison, the plan and the fault moments (default 0)"
    )
    p.add_argument("--students", type=int, help="synthetic students (default: 24 short, 120 full)")
    p.add_argument("--events-per-student", type=int, help="mean events per student (default: 40 short, 100 full)")
    p.add_argument("--time-limit-s", type=float, help="hard deadline for the whole run (default: 170 short, 900 full)")
    p.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        default="kafka",
        help="kafka (default): Apache Kafka, killed with SIGKILL mid-stream and restarted on its log directory; "
        "tansu: the embedded broker",
    )
    p.add_argument(
        "--broker-storage",
        choices=("memory", "s3"),
        default="memory",
        help="with --broker tansu, its storage: memory (default; a restart loses topics and offsets, "
        "so the suite drains first and goes on with new topics) "
        "or s3 (a local moto S3 server: the broker restarts mid-stream and keeps everything; slow on a busy box)",
    )
    p.add_argument(
        "--ha",
        action="store_true",
        help="high availability: Redis as a primary, a replica and three Sentinels "
        "(serve follows a redis+sentinel:// URL), Kafka as three nodes "
        "(replication factor 3, min.insync.replicas 2); the Redis phase fails the primary over, "
        "the broker phase SIGKILLs the input partitions' leader",
    )
    p.add_argument(
        "--redis-min-replicas",
        type=int,
        help="with --ha, KT_REDIS_MIN_REPLICAS of serve: 1 (default) waits for the replica before a commit; "
        "0 shows what a failover loses without it",
    )
    p.add_argument("--json", action="store_true", help="stdout is only the JSON line (the summary goes to stderr)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (logs, AOF, checkpoint); it is always kept on failure",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for name in ("students", "events_per_student"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.redis_min_replicas is not None and not args.ha:
        p.error("--redis-min-replicas needs --ha (a single Redis has no replica to wait for)")
    if args.redis_min_replicas is not None and args.redis_min_replicas not in (0, 1):
        p.error(f"--redis-min-replicas must be 0 or 1 (--ha runs one replica), got {args.redis_min_replicas}")
    if args.ha and args.broker != "kafka":
        p.error("--ha needs --broker kafka (three Apache Kafka nodes)")
    return args


def failures(outcome: Outcome) -> list[str]:
    v, t, f = outcome.verdict, outcome.tally, outcome.faults
    found = []
    if outcome.timed_out:
        found.append(f"timed out: {outcome.timed_out}")
    if outcome.error:
        found.append(f"error: {outcome.error}")
    found += [f"stalled: {stall}" for stall in outcome.stalls]
    if v is None or t is None:
        return found + ["no verdict"]
    checks = {
        "state mismatches": v.state_mismatches,
        "lost events": v.lost,
        "outputs differing from the reference": v.output_mismatches,
        "outputs beyond the events sent (applied twice)": v.unexpected_outputs,
        "repeated outputs with other values": len(t.conflicting_duplicates),
        "undecodable outputs": t.undecodable_outputs,
        "poison without a dead letter": v.poison_missing,
        "dead letters with the wrong reason": v.poison_wrong_reason,
        "dead letters not carrying the original key and bytes": v.poison_altered,
        "dead letters of valid or unknown events": v.dlq_unexpected,
        "fuzzed events neither answered nor dead-lettered as the decoder says": v.fuzz_missing,
        "processors that crashed during a Redis outage": f.redis_outage_crashes,
        "processors that crashed during a Redis failover": f.redis_failover_crashes,
        "processors that crashed during a Kafka leader kill": f.kafka_leader_kill_crashes,
        "final SIGTERMs with a non-zero exit": sum(code != 0 for code in outcome.exit_codes),
    }
    found += [f"{count} {what}" for what, count in checks.items() if count]
    if outcome.ha:  # every planned HA fault must have completed
        if f.redis_failovers < outcome.planned_failovers:
            found.append(f"{f.redis_failovers} of {outcome.planned_failovers} Redis failovers completed")
        if f.kafka_leader_kills < outcome.planned_leader_kills:
            found.append(f"{f.kafka_leader_kills} of {outcome.planned_leader_kills} Kafka leader kills completed")
    return found


def report(outcome: Outcome, profile_name: str) -> dict:
    v, t, f = outcome.verdict, outcome.tally, outcome.faults
    fails = failures(outcome)
    return {
        "ok": not fails,
        "failures": fails,
        "profile": profile_name,
        "seed": outcome.seed,
        "events_in": outcome.events_in,
        "valid_events": v.valid_events if v else None,
        "poison_events": v.poison_events if v else None,
        "outputs": t.output_records if t else 0,
        "unique_outputs": len(t.outputs) if t else 0,
        "dlq": len(t.dead_letters) if t else 0,
        "dlq_records": t.dead_letter_records if t else 0,
        "duplicates_dropped": t.duplicates if t else 0,
        "dlq_repeats": t.dead_letter_repeats if t else 0,
        "dlq_truncated": t.truncated_dead_letters if t else 0,
        "state_mismatches": v.state_mismatches if v else None,
        "lost": v.lost if v else None,
        "output_mismatches": v.output_mismatches if v else None,
        "unexpected_outputs": v.unexpected_outputs if v else None,
        "poison_missing": v.poison_missing if v else None,
        "poison_wrong_reason": v.poison_wrong_reason if v else None,
        "poison_by_reason": dict(sorted(v.poison_by_reason.items())) if v else {},
        "fuzz_events": v.fuzz_events if v else None,
        "fuzz_answered": v.fuzz_answered if v else None,
        "fuzz_dead_lettered": v.fuzz_dead_lettered if v else None,
        "fuzz_missing": v.fuzz_missing if v else None,
        "fuzz_by_reason": dict(sorted(v.fuzz_by_reason.items())) if v else {},
        "faults": dataclasses.asdict(f),
        "processor_starts": outcome.member_starts,
        "processor_crashes": len(outcome.processor_crashes),
        "supervisor_restarts": outcome.supervisor_restarts,
        "restart_failures": len(outcome.restart_failures),
        "processor_log": outcome.log_counts,
        "committed_matches_end": outcome.committed_matches_end,
        "broker": outcome.broker,
        "broker_kills": f.broker_kills,
        "broker_storage": outcome.broker_storage,
        "ha": outcome.ha,
        "redis": "primary, replica, 3 Sentinels" if outcome.ha else "one redis-server (append-only)",
        "kafka_nodes": 3 if outcome.ha else 1,
        "redis_min_replicas": outcome.redis_min_replicas,
        "redis_failovers": f.redis_failovers,
        "kafka_leader_kills": f.kafka_leader_kills,
        "timed_out": outcome.timed_out,
        "phases_s": outcome.phases,
        "elapsed_s": outcome.elapsed_s,
    }


def summary_lines(outcome: Outcome, result: dict) -> list[str]:
    f = outcome.faults
    lines = [
        f"fault suite ({result['profile']}, seed {outcome.seed}): {'PASS' if result['ok'] else 'FAIL'} in "
        f"{outcome.elapsed_s:.0f} s",
        f"  sent {result['events_in']} messages: {result['valid_events']} valid "
        f"({f.out_of_order_events} with a ts earlier than the one before), {result['poison_events']} poison, "
        f"{result['fuzz_events']} fuzzed ({result['fuzz_answered']} answered, "
        f"{result['fuzz_dead_lettered']} dead-lettered {result['fuzz_by_reason']}, {result['fuzz_missing']} missing)",
        f"  faults: {f.processor_kills} SIGKILLs; {f.joins} joins, {f.leaves_sigterm} SIGTERM leaves, "
        f"{f.leaves_sigkill} SIGKILL leaves; {f.redis_outages} Redis outages "
        f"({f.redis_down_s:.0f} s down, {f.redis_outage_crashes} processor crashes); "
        f"{f.broker_restarts} broker restarts, {f.broker_kills} by SIGKILL ({f.broker_down_s:.0f} s down: "
        f"{f.broker_restart_survivors} processors rode it out, {f.broker_restart_crashes} exited and were restarted)",
        f"  broker: {outcome.broker_note}",
        *(
            [
                f"  ha: KT_REDIS_MIN_REPLICAS={outcome.redis_min_replicas}; {f.redis_failovers} Redis failovers "
                f"(replica cut off {f.redis_cut_off_s} s before each kill, promoted {f.redis_failover_s} s after it, "
                f"{f.redis_failover_crashes} processor crashes); {f.kafka_leader_kills} Kafka leader kills "
                f"(nodes {f.kafka_killed_nodes}, everything answered {f.kafka_leader_pause_s} s after each kill, "
                f"{f.kafka_leader_kill_crashes} processor crashes)"
            ]
            if outcome.ha
            else []
        ),
        f"  processors: {result['processor_starts']} started, {result['processor_crashes']} exited on their own "
        f"({result['supervisor_restarts']} supervisor restarts); "
        + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in result["processor_log"].items()),
        f"  outputs: {result['outputs']} records, {result['unique_outputs']} distinct (student, seq), "
        f"{result['duplicates_dropped']} repeats dropped; dead letters: {result['dlq']} "
        f"({result['dlq_repeats']} repeats) {result['poison_by_reason']}",
        f"  checks: {result['state_mismatches']} state mismatches, {result['lost']} lost, "
        f"{result['output_mismatches']} outputs off the reference, {result['poison_missing']} poison missing, "
        f"{result['poison_wrong_reason']} wrong reasons; committed offsets = end offsets: "
        f"{result['committed_matches_end']}",
        "  phases: " + ", ".join(f"{name} {s:.0f} s" for name, s in outcome.phases.items()),
    ]
    for failure in result["failures"]:
        lines.append(f"  FAILED: {failure}")
    if outcome.verdict is not None:
        lines += [f"    {problem}" for problem in outcome.verdict.problems[:10]]
    for crash in outcome.processor_crashes[:5]:
        lines.append(f"  crash: {crash}")
    return lines


def hard_deadline(suite: Suite, limit_s: float, profile_name: str, started: float) -> threading.Timer:
    """At ``limit_s`` whatever still runs is killed and the run ends with one JSON line and exit 124."""

    def expire() -> None:
        suite.kill_all()
        line = {
            "ok": False,
            "failures": [f"hard deadline of {limit_s:.0f} s"],
            "profile": profile_name,
            "seed": suite.seed,
            "timed_out": "hard deadline",
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        print(json.dumps(line), flush=True)
        os._exit(124)

    timer = threading.Timer(limit_s, expire)
    timer.daemon = True
    timer.start()
    return timer


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = SHORT if args.short else FULL
    if args.ha:
        profile = dataclasses.replace(profile, time_limit_s=profile.time_limit_s + HA_EXTRA_S)
    overrides = {
        k: v
        for k, v in {
            "students": args.students,
            "events_per_student": args.events_per_student,
            "time_limit_s": args.time_limit_s,
        }.items()
        if v is not None
    }
    profile = dataclasses.replace(profile, **overrides)
    if args.broker == "kafka" and (reason := kafka_unavailable()):
        print(f"fault-suite: {reason} (or use --broker tansu)", file=sys.stderr)
        return 2
    if args.ha and (reason := SentinelGroup.unavailable()):
        print(f"fault-suite: --ha: {reason} (install redis-server and redis-sentinel)", file=sys.stderr)
        return 2
    if args.broker == "tansu" and args.broker_storage == "s3" and not S3Server.available():
        print(
            "fault-suite: --broker-storage s3 needs moto[server] and boto3 (pip install 'moto[server]')",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)  # the reference run is small; the members need the cores
    # several members on one host; and nothing of the suite listens beyond 127.0.0.1
    os.environ["KT_METRICS_PORT"] = "0"
    work_dir = Path(tempfile.mkdtemp(prefix="fault-suite-"))
    started = time.monotonic()
    min_replicas = (1 if args.redis_min_replicas is None else args.redis_min_replicas) if args.ha else 0
    suite = Suite(
        profile,
        args.seed,
        work_dir,
        args.broker,
        args.broker_storage,
        progress=not args.no_progress,
        ha=args.ha,
        redis_min_replicas=min_replicas,
    )
    timer = hard_deadline(suite, profile.time_limit_s, profile.name, started)
    signal.signal(signal.SIGTERM, interrupt)  # unwinds like Ctrl-C
    try:
        outcome = asyncio.run(
            suite.run(started + profile.time_limit_s - min(TEARDOWN_RESERVE_S, profile.time_limit_s / 4))
        )
    except KeyboardInterrupt:
        suite.kill_all()
        print(
            json.dumps(
                {
                    "ok": False,
                    "failures": ["interrupted"],
                    "profile": profile.name,
                    "seed": args.seed,
                    "work_dir": str(work_dir),
                }
            ),
            flush=True,
        )
        return 130
    finally:
        timer.cancel()
    result = report(outcome, profile.name)
    say = sys.stderr if args.json else sys.stdout
    for line in summary_lines(outcome, result):
        print(line, file=say)
    if result["ok"] and not args.keep:
        shutil.rmtree(work_dir, ignore_errors=True)
    else:
        result["work_dir"] = str(work_dir)
        print(f"  logs, AOF and checkpoint kept in {work_dir}", file=say)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1
