"""The one root error of stream-kt and its direct families.

Anything raised as a ``StreamKTError`` is a user-facing problem (bad file, bad
argument, bad checkpoint): the CLI prints its message on one line and exits 2.
Anything else is a bug and keeps its traceback.
"""


class StreamKTError(Exception):
    """Root of every error stream-kt raises on purpose."""


class DataError(StreamKTError):
    """A data file is missing, unreadable, malformed or empty."""


class CheckpointError(StreamKTError):
    """A checkpoint directory is missing, incomplete or of another format."""


class ConfigError(StreamKTError):
    """A setting (flag, environment variable) is invalid."""


class UnknownModelError(StreamKTError):
    """A model name is not in the registry."""
