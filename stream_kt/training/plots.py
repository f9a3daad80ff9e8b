"""PNG plots of results people compare (matplotlib, no display needed; the ``demo`` extra installs it)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def plot_learning_curves(history: list[dict], path: Path, title: str) -> None:
    """Training loss per epoch, and validation log-loss and AUC where there were validation students.

    A by-product of training: without matplotlib it is skipped with a warning, not an error.
    """
    try:
        import matplotlib
    except ImportError:
        log.warning("no %s: matplotlib is not installed (pip install 'stream-kt[demo]')", path)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    validated = all("valid_auc" in h for h in history)
    fig, axes = plt.subplots(1, 2 if validated else 1, figsize=(10 if validated else 5, 4), squeeze=False)
    ax_loss = axes[0][0]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    if validated:
        ax_loss.plot(epochs, [h["valid_logloss"] for h in history], marker="o", label="validation log-loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("binary cross-entropy")
    ax_loss.legend()
    if validated:
        ax_auc = axes[0][1]
        ax_auc.plot(epochs, [h["valid_auc"] for h in history], marker="o", color="tab:green")
        best = max(history, key=lambda h: h["valid_auc"])
        ax_auc.axvline(best["epoch"], color="grey", linestyle="--", label=f"best epoch {best['epoch']}")
        ax_auc.set_xlabel("epoch")
        ax_auc.set_ylabel("validation AUC")
        ax_auc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
