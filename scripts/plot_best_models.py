"""Bar chart of the best models' held-out AUC on ASSISTments 2009 (skill_id split).

Reads the result file written from ``stream-kt evaluate --json`` outputs and the
checkpoints' metrics (benchmarks/results/gbdt_ensemble_assist2009.json) and draws each
model's test AUC, as ``stream-kt compare`` draws its chart, against the published DKT
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
    seeds = np.array([before[name]["test"]["auc"] for name in ("gbdt seed 0", "gbdt seed 1")])
    aucs = {
        "gbdt\n(2 seeds)\nno transfer": (seeds.mean(), seeds.std()),
        "gbdt\nlr 0.05\nno transfer": (before["gbdt lr 0.05 seed 0"]["test"]["auc"], 0.0),
        "ensemble\nno transfer": (results["ensemble_with_gbdt_lr_0.05"]["test_auc"], 0.0),
        "Last-Query\nw400": (now["lastquery w400 seed 0"]["test"]["auc"], 0.0),
        "DKT+": (now["dkt_plus seed 0"]["test"]["auc"], 0.0),
        "gbdt": (now["gbdt seed 0"]["test"]["auc"], 0.0),
        "gbdt\nlr 0.05": (now["gbdt lr 0.05 seed 0"]["test"]["auc"], 0.0),
        "gbdt lr 0.05\n63 leaves": (now["gbdt lr 0.05 leaves 63 min_data 200 seed 0"]["test"]["auc"], 0.0),
        "ensemble": (results["sixth_session_transfer_features"]["ensemble_lq_dktp_gbdt_l63"]["test"]["auc"], 0.0),
    }  # (mean, std)
    summary = {name: {"auc_mean": float(mean), "auc_std": float(std)} for name, (mean, std) in aucs.items()}
    out = args.results.with_name(args.results.stem + "_auc.png")
    references = {f"published DKT {results['published_dkt']}": results["published_dkt"], f"target {results['target']}": results["target"]}
    plot_auc(summary, out, "ASSISTments 2009 skill_id: test AUC, seed 0 unless said", references)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
