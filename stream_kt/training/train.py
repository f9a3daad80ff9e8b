"""Training: Adam, BCE on non-padded next-step targets, early stopping on validation AUC."""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from stream_kt.data.batches import cut_windows, iterate_batches
from stream_kt.data.split import Split
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.errors import ConfigError
from stream_kt.models import build_model
from stream_kt.training.checkpoint import Checkpoint, save_checkpoint
from stream_kt.training.evaluate import evaluate
from stream_kt.training.plots import plot_learning_curves


@dataclass(frozen=True)
class TrainConfig:
    model: str = "dkt"
    window: int = 100  # training windows: long sequences are cut into consecutive windows
    batch_size: int = 64
    epochs: int = 30
    learning_rate: float = 1e-3
    patience: int = 5  # epochs without a better validation AUC before stopping
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    model_options: dict = field(default_factory=dict)  # overrides of the model's Config defaults


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
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    model = build_model(config.model, num_items=len(vocab), **config.model_options)
    if hasattr(model, "fit"):  # fitted its own way (gbdt: boosting), not by gradient descent
        started = time.perf_counter()
        model, metrics = model.fit(train_sequences, valid_sequences, seed=config.seed, progress=progress)
        metrics["seconds_per_epoch"] = (time.perf_counter() - started) / max(1, len(metrics["history"]))
        return _save(out_dir, model, vocab, split, config, metrics, len(train_sequences))
    if any(hasattr(part, "fit") for part in model.modules()):  # an ensemble member that boosts
        raise ConfigError(f"{config.model}: a member is fitted by boosting, not gradient descent; train it alone and combine checkpoints with stream-kt ensemble")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    windows = cut_windows(train_sequences, config.window)
    history: list[dict] = []
    best_auc, best_state, best_epoch = -1.0, copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(1, config.epochs + 1), desc=f"train {config.model}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        started = time.perf_counter()
        losses = []
        n_batches = (len(windows) + config.batch_size - 1) // config.batch_size
        batches = tqdm(iterate_batches(windows, config.batch_size, shuffle=True, seed=config.seed + epoch), total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
        for batch in batches:
            loss = model.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            batches.set_postfix(loss=f"{loss.item():.4f}")
        seconds = time.perf_counter() - started
        valid = evaluate(model, valid_sequences)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "valid_auc": valid["auc"], "valid_logloss": valid["logloss"], "seconds": seconds})
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", valid_auc=f"{valid['auc']:.4f}", s_per_epoch=f"{seconds:.1f}")
        if valid["auc"] > best_auc:
            best_auc, best_state, best_epoch = valid["auc"], copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    metrics = {
        "best_epoch": best_epoch,
        "valid_auc": best_auc,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "train_windows": len(windows),
        "history": history,
    }
    return _save(out_dir, model, vocab, split, config, metrics, len(train_sequences))


def _save(out_dir: str | Path, model, vocab: Vocabulary, split: Split, config: TrainConfig, metrics: dict, n_students: int) -> Checkpoint:
    checkpoint = save_checkpoint(out_dir, model, vocab, split, asdict(config), metrics)
    plot_learning_curves(metrics["history"], Path(out_dir) / "learning_curves.png", f"{config.model}: {n_students} training students")
    return checkpoint
