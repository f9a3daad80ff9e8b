"""Training: Adam, BCE on non-padded next-step targets, early stopping on validation AUC."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from stream_kt.checkpoint import Checkpoint, save_checkpoint
from stream_kt.data.batches import cut_windows, iterate_batches
from stream_kt.data.split import Split
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.errors import CheckpointError, ConfigError
from stream_kt.models import build_model, model_class, vocabulary_fields
from stream_kt.progress import progress_bar
from stream_kt.training.evaluate import evaluate
from stream_kt.training.fitters import fitter_of
from stream_kt.training.plots import plot_learning_curves

T = TypeVar("T")  # what gradient_epoch's loss function takes: a batch, or a batch and its targets


@dataclass(frozen=True)
class TrainConfig:
    model: str = "dkt"
    window: int = 100  # training windows: long sequences are cut into consecutive windows
    batch_size: int = 64
    epochs: int = 30
    # Adam's step size; 0: the model's own (KTModel.default_learning_rate), filled in on construction
    learning_rate: float = 0.0
    patience: int = 5  # epochs without a better validation AUC before stopping
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    model_options: dict = field(default_factory=dict)  # overrides of the model's Config defaults

    def __post_init__(self) -> None:
        # resolved here, so the checkpoint records the rate that was used, and a refit reuses it
        if not self.learning_rate:
            object.__setattr__(self, "learning_rate", model_class(self.model).default_learning_rate)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    train_sequences: Sequence[EncodedSequence],
    valid_sequences: Sequence[EncodedSequence],
    vocab: Vocabulary,
    split: Split,
    config: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
) -> Checkpoint:
    require_trainable(config.model)
    model = fresh_model(config, vocab)
    if not model.fitted_by_gradient:  # fitted its own way (gbdt: boosting)
        started = time.perf_counter()
        model, metrics = fitter_of(model)(model, train_sequences, valid_sequences, seed=config.seed, progress=progress)
        metrics["seconds_per_epoch"] = (time.perf_counter() - started) / max(1, len(metrics["history"]))
        return _save(out_dir, model, vocab, split, config, metrics, len(train_sequences))
    optimizer = torch.optim.Adam(model.parameter_groups(config.learning_rate))
    windows = cut_windows(train_sequences, config.window)
    metrics = early_stopped(
        model,
        lambda epoch: _train_epoch(model, optimizer, windows, config, epoch, progress),
        valid_sequences,
        config,
        progress,
    )
    metrics["train_windows"] = len(windows)
    return _save(out_dir, model, vocab, split, config, metrics, len(train_sequences))


def require_trainable(name: str) -> None:
    """``ConfigError`` unless model ``name`` is fitted from data on its own (``KTModel.trainable_directly``)."""
    cls = model_class(name)
    if not cls.trainable_directly:
        raise ConfigError(f"model {name} is not trained directly: {cls.made_by}")


def early_stopped(
    model,
    run_epoch: Callable[[int], dict],
    valid_sequences: Sequence[EncodedSequence],
    config: TrainConfig,
    progress: bool,
    desc: str | None = None,
) -> dict:
    """Train epoch after epoch until validation AUC has not improved for ``config.patience`` epochs; keep the best.

    ``run_epoch(epoch)`` trains ``model`` one epoch and returns its statistics
    (``train_loss``, ``seconds``, and whatever else the history should keep). The
    model ends in eval mode with the weights of its best validation epoch; the
    result is the metrics a checkpoint records.
    """
    history: list[dict] = []
    best_auc, best_state, best_epoch = -1.0, copy.deepcopy(model.state_dict()), 0
    bar = progress_bar(
        range(1, config.epochs + 1), desc=desc or f"train {config.model}", unit="epoch", disable=not progress
    )
    for epoch in bar:
        stats = run_epoch(epoch)
        valid = evaluate(model, valid_sequences)
        history.append({"epoch": epoch, **stats, "valid_auc": valid["auc"], "valid_logloss": valid["logloss"]})
        bar.set_postfix(
            loss=f"{stats['train_loss']:.4f}", valid_auc=f"{valid['auc']:.4f}", s_per_epoch=f"{stats['seconds']:.1f}"
        )
        if valid["auc"] > best_auc:
            best_auc, best_state, best_epoch = valid["auc"], copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return {
        "best_epoch": best_epoch,
        "valid_auc": best_auc,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "history": history,
    }


def refit(
    checkpoint: Checkpoint,
    students: Sequence[EncodedSequence],
    out_dir: str | Path,
    progress: bool = True,
    seed: int | None = None,
    split: Split | None = None,
) -> Checkpoint:
    """A fresh model trained on ``students`` for the epochs (boosting rounds) early stopping picked for ``checkpoint``.

    ``students`` are the checkpoint's training plus validation students: the validation
    students chose the settings and the epoch count, and then add their answers to
    the training data. Same model settings, window, learning rate and seed (``seed``:
    another initialisation and batch order, for the spread between runs of one
    recipe); the held-out students stay held out. ``split``: the split to record when
    ``students`` are not the training plus validation students (a cross-fitted teacher's
    fold). The refit model's split has no validation students left, so nothing can be
    fitted on them afterwards (ensemble weights come from the checkpoints it was refit
    from).
    """
    epochs = int(checkpoint.metrics.get("best_epoch") or 0)
    if epochs < 1 or not checkpoint.split.valid:
        raise CheckpointError(
            f"{checkpoint.path}: not an early-stopped checkpoint (no validation students or epoch count to refit with)"
        )
    if "distill" in checkpoint.train_config:
        raise CheckpointError(
            f"{checkpoint.path}: was distilled from a teacher; refit it with --teacher, "
            "the teacher refit on the same students"
        )
    config = train_config_of(checkpoint, seed)
    model = fresh_model(config, checkpoint.vocab)
    started = time.perf_counter()
    if not model.fitted_by_gradient:
        model, metrics = fitter_of(model)(model, students, [], seed=config.seed, progress=progress, rounds=epochs)
    else:
        optimizer = torch.optim.Adam(model.parameter_groups(config.learning_rate))
        windows = cut_windows(students, config.window)
        history = [
            {"epoch": epoch, **_train_epoch(model, optimizer, windows, config, epoch, progress)}
            for epoch in progress_bar(
                range(1, epochs + 1), desc=f"refit {config.model}", unit="epoch", disable=not progress
            )
        ]
        model.eval()
        metrics = {"best_epoch": epochs, "train_windows": len(windows), "history": history}
    metrics["seconds_per_epoch"] = (time.perf_counter() - started) / epochs
    metrics["refit_of"] = {
        "checkpoint": str(checkpoint.path),
        "version": checkpoint.version,
        "valid_auc": checkpoint.metrics.get("valid_auc"),
    }
    split = split or replace(checkpoint.split, train=checkpoint.split.train + checkpoint.split.valid, valid=())
    return _save(out_dir, model, checkpoint.vocab, split, config, metrics, len(students))


def fresh_model(config: TrainConfig, vocab: Vocabulary):
    """The untrained model ``config`` describes for ``vocab``, initialised from its seed (so a refit
    starts where training did)."""
    fields = vocabulary_fields(config.model, len(vocab), vocab.max_skills, len(vocab.questions))
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    return build_model(config.model, **fields, **config.model_options)


def train_config_of(checkpoint: Checkpoint, seed: int | None = None) -> TrainConfig:
    """The training settings a checkpoint recorded (fields this version does not know are
    dropped), with ``seed`` if given."""
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in checkpoint.train_config.items() if k in known})
    return config if seed is None else replace(config, seed=seed)


def _train_epoch(
    model, optimizer: torch.optim.Optimizer, windows, config: TrainConfig, epoch: int, progress: bool
) -> dict:
    """One pass over the shuffled training windows on the model's own loss: ``train_loss`` (mean) and ``seconds``."""
    n_batches = (len(windows) + config.batch_size - 1) // config.batch_size
    batches = iterate_batches(windows, config.batch_size, shuffle=True, seed=config.seed + epoch)
    return gradient_epoch(
        model, optimizer, batches, n_batches, model.loss, config.grad_clip, f"epoch {epoch}", progress
    )


def gradient_epoch(
    model,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[T],
    n_batches: int,
    loss_of: Callable[[T], torch.Tensor],
    grad_clip: float,
    desc: str,
    progress: bool,
) -> dict:
    """One Adam pass: ``loss_of(batch)`` for each of ``batches``, clipped gradients. Returns
    ``train_loss`` (mean) and ``seconds``."""
    model.train()
    started = time.perf_counter()
    losses = []
    bar = progress_bar(batches, total=n_batches, desc=desc, unit="batch", leave=False, disable=not progress)
    for batch in bar:
        loss = loss_of(batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return {"train_loss": float(np.mean(losses)), "seconds": time.perf_counter() - started}


def _save(
    out_dir: str | Path, model, vocab: Vocabulary, split: Split, config: TrainConfig, metrics: dict, n_students: int
) -> Checkpoint:
    checkpoint = save_checkpoint(out_dir, model, vocab, split, asdict(config), metrics)
    plot_learning_curves(
        metrics["history"], Path(out_dir) / "learning_curves.png", f"{config.model}: {n_students} training students"
    )
    return checkpoint
