"""Bar chart of the best models' held-out AUC on ASSISTments 2009 (skill_id split).

Reads the result file written from ``stream-kt evaluate --json`` outputs and the
checkpoints' metrics (benchmarks/results/gbdt_ensemble_assist2009.json) and draws each
model's test AUC (the seventh session's members and ensemble early-stopped, then refit
on training plus validation students), as ``stream-kt compare`` draws its chart, against the published DKT
figure and issue 5's 0.83 target.

    python scripts/plot_best_models.py benchmarks/results/gbdt_ensemble_assist2009.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stream_kt.commands.compare import plot_auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    before, now = results["single_models"], results["sixth_session_transfer_features"]["single_models"]  # fifth, sixth session
    refit = results["seventh_session_refit"]
    seeds = np.array([before[name]["test"]["auc"] for name in ("gbdt seed 0", "gbdt seed 1")])
    aucs = {
        "gbdt\n(2 seeds)\nno transfer": (seeds.mean(), seeds.std()),
        "ensemble\nno transfer": (results["ensemble_with_gbdt_lr_0.05"]["test_auc"], 0.0),
        "gbdt\nlr 0.05": (now["gbdt lr 0.05 seed 0"]["test"]["auc"], 0.0),
    }  # (mean, std)
    for name, label in (("lastquery w400", "Last-Query\nw400"), ("dkt_plus", "DKT+"), ("gbdt lr 0.05 leaves 63", "gbdt lr 0.05\n63 leaves"), ("ensemble", "ensemble")):
        aucs[label] = (refit["early_stopped"][name]["test_auc"], 0.0)
        aucs[label + "\nrefit"] = (refit["refit"][name]["test_auc"], 0.0)
    summary = {name: {"auc_mean": float(mean), "auc_std": float(std)} for name, (mean, std) in aucs.items()}
    out = args.results.with_name(args.results.stem + "_auc.png")
    references = {f"published DKT {results['published_dkt']}": results["published_dkt"], f"target {results['target']}": results["target"]}
    plot_auc(summary, out, "ASSISTments 2009 skill_id: test AUC, seed 0 unless said", references)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
