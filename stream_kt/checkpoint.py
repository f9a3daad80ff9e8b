"""A checkpoint is a directory; its content hash is the model version the stream reports.

    config.json   format_version, model name, model config, training settings
    weights.pt    the state dict
    vocab.json    the item vocabulary (raw id <-> index, names)
    split.json    which students trained, validated and were held out
    metrics.json  learning curves and held-out metrics (not part of the version)

The version is a sha256 over the config's model part, the vocabulary and the weights'
bytes, so two checkpoints with the same model serve identically iff versions match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stream_kt.data.split import Split
from stream_kt.data.vocab import Vocabulary
from stream_kt.errors import CheckpointError, StreamKTError
from stream_kt.models import KTModel, model_class
from stream_kt.models.ensemble import Ensemble

FORMAT_VERSION = 1
FILES = ("config.json", "weights.pt", "vocab.json", "split.json")


@dataclass
class Checkpoint:
    model: KTModel
    vocab: Vocabulary
    split: Split
    version: str
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def model_version(model: KTModel, vocab: Vocabulary) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"model": model.name, "config": model.config_dict()}, sort_keys=True).encode())
    digest.update(json.dumps(list(vocab.ids)).encode())
    if not vocab.one_entry_an_answer:  # how events map to entries
        digest.update(
            json.dumps(
                [vocab.skills, vocab.max_skills, list(vocab.questions), sorted(vocab.question_skills.items())]
            ).encode()
        )
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{model.name}-{digest.hexdigest()[:12]}"


def check_out_dir(path: str | Path) -> Path:
    """``path``, where a checkpoint may be written: a new or empty directory, or a checkpoint to replace.

    Commands check their ``--out`` with it before they train, so a bad one fails at once,
    not after an hour of training.  A directory holding other files is refused: a
    checkpoint's config.json and metrics.json would overwrite files of the same name.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a directory (a checkpoint is a directory): give a new path")
    if out.is_dir():
        if not (out / "config.json").is_file() and any(out.iterdir()):
            raise CheckpointError(
                f"{out}: a directory with other files and no checkpoint in it: give a new or empty directory, "
                "or a checkpoint to replace"
            )
        target = out
    else:
        target = next(parent for parent in out.absolute().parents if parent.exists())
        if not target.is_dir():
            raise CheckpointError(f"{out}: {target} is not a directory")
    if not os.access(target, os.W_OK | os.X_OK):
        raise CheckpointError(f"{out}: cannot write in {target} (permission denied)")
    return out


def save_checkpoint(
    out_dir: str | Path,
    model: KTModel,
    vocab: Vocabulary,
    split: Split,
    train_config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Checkpoint:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{out}: cannot create checkpoint directory ({exc.strerror})") from None
    version = model_version(model, vocab)
    config = {
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "model_config": model.config_dict(),
        "train": train_config,
        "version": version,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(model.state_dict(), out / "weights.pt")
    vocab.save(out / "vocab.json")
    (out / "split.json").write_text(json.dumps(split.to_json()))
    checkpoint = Checkpoint(model, vocab, split, version, train_config, metrics or {}, out)
    write_metrics(checkpoint)
    return checkpoint


def write_metrics(checkpoint: Checkpoint) -> None:
    assert checkpoint.path is not None
    (checkpoint.path / "metrics.json").write_text(json.dumps(checkpoint.metrics, indent=2))


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path}: not a stream-kt checkpoint (missing {', '.join(missing)})")
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}/config.json: invalid JSON ({exc})") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {config.get('format_version')!r}, this stream-kt reads {FORMAT_VERSION}"
        )
    try:
        cls = model_class(config["model"])
        model = cls(cls.config_from(config["model_config"]))
        state = torch.load(io.BytesIO((path / "weights.pt").read_bytes()), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except StreamKTError:
        raise
    except Exception as exc:  # torch raises many kinds on a corrupt or mismatched file
        raise CheckpointError(
            f"{path}: cannot load weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    model.eval()
    vocab = Vocabulary.load(path / "vocab.json")
    split = Split.from_json(json.loads((path / "split.json").read_text()))
    version = model_version(model, vocab)
    if config.get("version") != version:
        raise CheckpointError(
            f"{path}: content hash {version} does not match the recorded version "
            f"{config.get('version')} (files changed?)"
        )
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else {}
    return Checkpoint(model, vocab, split, version, config.get("train", {}), metrics, path)


def save_ensemble(
    out_dir: str | Path,
    members: list[Checkpoint],
    weights: tuple[float, ...] = (),
    fitted: dict[str, Any] | None = None,
) -> Checkpoint:
    """One checkpoint serving the (``weights``-weighted) mean of ``members``' predictions (``models.ensemble``).

    ``fitted``: how the weights were fitted (validation students and AUCs), recorded in
    the metrics.

    Members must share the vocabulary and the held-out students: a member trained on
    another member's test students would make the ensemble's test score dishonest.
    Training and validation students may differ (other seeds); the first member's
    split is recorded, every member's version, source and scores in the training
    settings.
    """
    if len(members) < 2:
        raise CheckpointError("an ensemble needs at least two checkpoints")
    nested = [m for m in members if m.model.name == Ensemble.name]
    if nested:
        raise CheckpointError(f"{nested[0].path}: is an ensemble already; list its members instead")
    first = members[0]
    for member in members[1:]:
        if member.vocab.ids != first.vocab.ids or member.vocab.item_column != first.vocab.item_column:
            raise CheckpointError(
                f"{member.path}: vocabulary differs from {first.path}'s: ensemble members must "
                "be trained on the same file"
            )
        if (member.split.test, member.split.test_source) != (first.split.test, first.split.test_source):
            raise CheckpointError(
                f"{member.path}: held out other students than {first.path} ({member.split.test_source} vs "
                f"{first.split.test_source})"
            )
    sources = [
        {
            "checkpoint": str(m.path),
            "version": m.version,
            "model": m.model.name,
            "seed": m.split.seed,
            "valid_auc": m.metrics.get("valid_auc"),
            "test_auc": m.metrics.get("test", {}).get("auc"),
        }
        for m in members
    ]
    model = Ensemble.of([m.model for m in members], weights)
    for source, weight in zip(sources, model.weights.tolist()):
        source["weight"] = weight
    metrics = {"members": sources, **({"weights_fitted_on_validation": fitted} if fitted else {})}
    return save_checkpoint(out_dir, model, first.vocab, first.split, {"ensemble_of": sources}, metrics)
