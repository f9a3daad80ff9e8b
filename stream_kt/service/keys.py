"""Every Redis key stream-kt uses, built here under one prefix.

A student's whole state is ONE key, so each update is atomic on its own and the
design works unchanged on Redis Cluster (no multi-key transactions across students).
"""

from __future__ import annotations

DEFAULT_PREFIX = "kt"


def student_key(student_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:student:{student_id}"


def shadow_key(student_id: str, model_version: str, prefix: str = DEFAULT_PREFIX) -> str:
    """A student's state in a shadow model (``serve --shadow``): one key per student and version, so promoting
    that version later starts from it (``processor.py``: Shadow and promotion)."""
    return f"{prefix}:shadow:{model_version}:student:{student_id}"


def model_vocab_key(model_version: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The vocabulary (ids, names) of a served model, so ``inspect`` can name skills."""
    return f"{prefix}:model:{model_version}:vocab"


def model_vocab_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """Every served model's vocabulary key (SCAN's MATCH pattern): the versions that may have shadow states."""
    return f"{prefix}:model:*:vocab"


def version_of_vocab_key(key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The model version a ``model_vocab_key`` names."""
    return key.removeprefix(f"{prefix}:model:").removesuffix(":vocab")


def quality_key(model_version: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The online quality counts of a model version, added to by every processor (``quality.Scores``)."""
    return f"{prefix}:quality:{model_version}"


def quality_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:quality:*"


def quarantine_key(student_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Where an unreadable state of a student is kept (its last one), for a person to look at."""
    return f"{prefix}:quarantine:{student_id}"


def prefix_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """Every key under ``prefix`` (SCAN's MATCH pattern)."""
    return f"{prefix}:*"
