"""Refit: train a checkpoint again on its training plus validation students, read from its training file.

For the epochs (gbdt: trees) early stopping picked; an ensemble refits every member and
keeps its weights; a distilled student refits against its teacher refit the same way.
The held-out students stay held out.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stream_kt.checkpoint import Checkpoint, load_checkpoint, save_ensemble
from stream_kt.errors import CheckpointError
from stream_kt.models.ensemble import Ensemble
from stream_kt.training.distill import refit_distilled
from stream_kt.training.prepare import all_students_of
from stream_kt.training.train import refit


def refit_checkpoint(
    checkpoint: Checkpoint, data: str, fmt: str, out: str | Path, seed: int | None = None
) -> Checkpoint:
    """``training.train.refit`` of ``checkpoint`` on its training and validation students, read from ``data``."""
    students = all_students_of(
        data,
        fmt,
        checkpoint.vocab.item_column,
        checkpoint.split.train + checkpoint.split.valid,
        str(checkpoint.path),
        "training and validation",
    )
    print(
        f"refit {checkpoint.path} ({checkpoint.version}): {len(students)} students, "
        f"{checkpoint.metrics.get('best_epoch')} epochs",
        file=sys.stderr,
    )
    return refit(checkpoint, [checkpoint.vocab.encode(s) for s in students], out, seed=seed)


def refit_distilled_checkpoint(
    checkpoint: Checkpoint,
    teacher: Checkpoint,
    data: str,
    fmt: str,
    out: str | Path,
    cache: str,
    seed: int | None = None,
) -> Checkpoint:
    """``training.distill.refit_distilled`` of ``checkpoint`` against ``teacher``, on the
    students read from ``data``."""
    students = all_students_of(
        data,
        fmt,
        checkpoint.vocab.item_column,
        checkpoint.split.train + checkpoint.split.valid,
        str(checkpoint.path),
        "training and validation",
    )
    print(
        f"refit {checkpoint.path} ({checkpoint.version}) against {teacher.path} ({teacher.version}): "
        f"{len(students)} students, {checkpoint.metrics.get('best_epoch')} epochs",
        file=sys.stderr,
    )
    return refit_distilled(checkpoint, teacher, [checkpoint.vocab.encode(s) for s in students], out, cache, seed=seed)


def refit_ensemble(checkpoint: Checkpoint, data: str, fmt: str, out: str | Path, seed: int | None = None) -> Checkpoint:
    """Every member refit (under ``out/members``), combined with the ensemble's weights."""
    members = []
    for i, source in enumerate(checkpoint.train_config.get("ensemble_of", [])):
        member = load_checkpoint(source["checkpoint"])
        if member.version != source["version"]:
            raise CheckpointError(
                f"{source['checkpoint']}: holds {member.version} now, the ensemble was built from {source['version']}"
            )
        members.append(refit_checkpoint(member, data, fmt, Path(out) / "members" / f"{i}-{member.model.name}", seed))
    assert isinstance(checkpoint.model, Ensemble)
    refitted = save_ensemble(out, members, tuple(checkpoint.model.weights.tolist()))
    refitted.metrics["refit_of"] = {"checkpoint": str(checkpoint.path), "version": checkpoint.version}
    return refitted


def refit_any(
    checkpoint: Checkpoint,
    data: str,
    fmt: str,
    out: str | Path,
    seed: int | None = None,
    teacher: Checkpoint | None = None,
    cache: str = "runs/teacher_cache",
) -> Checkpoint:
    """The refit that fits ``checkpoint``: against ``teacher`` (a distilled student), every member
    (an ensemble), or itself."""
    if teacher is not None:
        return refit_distilled_checkpoint(checkpoint, teacher, data, fmt, out, cache, seed)
    if checkpoint.model.name == Ensemble.name:
        return refit_ensemble(checkpoint, data, fmt, out, seed)
    return refit_checkpoint(checkpoint, data, fmt, out, seed)
