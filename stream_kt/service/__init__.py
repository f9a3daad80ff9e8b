"""The streaming service: pure formats and state (events, state, batcher, keys), thin
adapters (kafka_io, redis_store), the processor loop that owns the commit order, and its
metrics and HTTP probes.  Imports nothing from the tools, training or the CLI."""
