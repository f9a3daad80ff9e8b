"""stream-kt: streaming knowledge tracing."""

__version__ = "0.1.0"
