"""Tools around the service: local brokers, replay (load generator), follow (reads the
outputs back), inspect (one student's state), the demo, process supervision and bench/
(what ``stream-kt bench`` runs)."""
