"""Bar chart of the best models' held-out AUC on ASSISTments 2009 (skill_id split).

Reads the result file written from ``stream-kt evaluate --json`` outputs and the
checkpoints' metrics (benchmarks/results/gbdt_ensemble_assist2009.json) and draws each
model's test AUC against the published DKT figure and issue 5's 0.83 target.

    python scripts/plot_best_models.py benchmarks/results/gbdt_ensemble_assist2009.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    bars = {name: run["test"]["auc"] for name, run in results["single_models"].items()}
    served = results["served_ensemble"]
    bars["served ensemble\n(LQ, DKT+, gbdt)"] = served["auc"]
    bars["ensemble with\ngbdt lr 0.05"] = results["ensemble_with_gbdt_lr_0.05"]["test_auc"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(range(len(bars)), list(bars.values()), color=["tab:blue"] * (len(bars) - 2) + ["tab:green"] * 2)
    for i, value in enumerate(bars.values()):
        ax.text(i, value + 0.0003, f"{value:.4f}", ha="center", fontsize=8)
    ax.axhline(results["published_dkt"], color="grey", linestyle=":", label=f"published DKT {results['published_dkt']}")
    ax.axhline(results["target"], color="tab:red", linestyle="--", label=f"target {results['target']}")
    ax.set_xticks(range(len(bars)), [name.replace(" seed", "\nseed") for name in bars], fontsize=8)
    ax.set_ylim(0.81, 0.832)
    ax.set_ylabel("test AUC (844 held-out students)")
    ax.set_title("ASSISTments 2009 skill_id: best models, honest next-answer AUC")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out = args.results.with_name(args.results.stem + "_auc.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
