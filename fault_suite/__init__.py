"""The fault-injection suite for ``stream-kt serve``: ``scripts/fault-suite [--short] [--json]``.

It starts its own broker, its own redis-server (append-only, fsync always) and
``stream-kt serve`` processes, all on 127.0.0.1; sends a seeded stream of synthetic
students' answers with poison mixed in; kills processors, rebalances the group, stops
Redis and kills the broker mid-stream; and then checks every output, every dead
letter and every student's final state in Redis against an uninterrupted offline run
of the same model (``model.step`` over each student's sequence, 1e-5).

The broker, by default Apache Kafka (``--broker kafka``): it is killed with SIGKILL
while the members work through a burst, with no draining first, and restarted on the
same log directory; its topics, records and committed offsets survive, and the
members ride it out (or the supervisor restarts them).

With ``--broker tansu`` (the embedded broker) the restart depends on its storage.
In memory (the default) a restart loses every topic, record and committed offset, so
the suite drains the stream first (everything sent is answered and collected),
restarts the broker while the members still run (recording whether they stay up),
and goes on with new topic names, new members and the same Redis: the rest of each
student's events must apply exactly once on top of the stored state, seq continuing.
(Recreating the old topic names would restart their offsets at 0, and the states'
stored offsets would skip those events as replays.)  With ``--broker-storage s3``
tansu keeps everything in a local S3 server (moto, which must be installed) and is
restarted mid-stream like Kafka.

With ``--ha`` (``--broker kafka`` only) Redis is a primary, a replica and three
Sentinels, and Kafka three nodes (replication factor 3, ``min.insync.replicas`` 2).
The Redis phase then fails the primary over (SIGKILL, once the replica has fallen
behind) and the broker phase SIGKILLs the node leading the most input partitions,
each at least twice in the full run; serve waits for the replica before each commit
(``KT_REDIS_MIN_REPLICAS`` 1, ``--redis-min-replicas 0`` to see what a failover loses
without it).  The last JSON line adds ``redis_failovers`` and ``kafka_leader_kills``.

    workload.py  the checkpoint, students, poison kinds, the send plan, the reference run
    services.py  the broker (and tansu's S3 server), the serve group (supervisor); redis-server
                 and serve are the launch layer's (stream_kt/tools/processes.py)
    traffic.py   the sender (input topic) and the collector (output and DLQ topics), on
                 stream_kt/tools/traffic.py
    verify.py    the tally of what came out and the final checks
    run.py       the phases and their faults
    cli.py       arguments, the hard deadline, the summary and the JSON line
"""
