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


class MissingExtraError(StreamKTError):
    """A tool needs a package that ``pip install stream-kt`` leaves out (plots, progress bars, the embedded broker)."""


def extra(module: str, purpose: str, extra_name: str = "demo") -> object:
    """Import ``module``, or say in one line which extra brings it (``serve`` needs none of them)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{purpose} needs {module.split('.')[0]}: pip install 'stream-kt[{extra_name}]'"
        ) from None
