"""Logging for the long-running commands: ``text`` for people, ``json`` (one object a line) for log pipelines.

What is logged, by default (INFO): topic/partition/offset of records, student ids,
dead-letter reason codes, counts.  Not logged: event payloads (a dead letter's detail,
which may quote field values, is DEBUG), and secrets (URLs pass through
``settings.mask_url``; ``StreamSettings.__repr__`` masks passwords).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# attributes every LogRecord has; anything else was passed as ``extra=`` and is emitted as a field
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message", extra fields..., "exc"}: one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """One stderr handler on the root logger, as ``logging.basicConfig`` does.

    Like basicConfig it leaves a root logger that someone else configured alone (pytest's
    capture, an embedding application); a handler of an earlier call is replaced.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "stream_kt", False)]
    if len(ours) < len(root.handlers):
        return
    for old in ours:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.stream_kt = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
