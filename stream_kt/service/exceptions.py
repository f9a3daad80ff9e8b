from stream_kt.errors import StreamKTError


class StreamError(StreamKTError):
    """A streaming component failed (broker, Redis, processor)."""


class InvalidEvent(StreamKTError):
    """An answer event that cannot be applied; ``reason`` is a stable code for the DLQ and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FatalStreamError(StreamError):
    """An error retrying cannot fix: the processor stops with its batch uncommitted."""


class BrokerError(StreamError):
    """The embedded broker could not be started."""
