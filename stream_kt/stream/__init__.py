"""Streaming half: pure formats and state (events, state, batcher), thin adapters
(kafka_io, redis_store, broker) and the processor loop that owns the commit order."""
