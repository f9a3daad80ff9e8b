"""Gather trained checkpoints' held-out results into benchmarks/results/models_<name>.{json,md}.

Each run directory is one ``stream-kt train ... --out DIR`` checkpoint with a
``command.txt`` beside it (the exact command) and, optionally, ``parity.json`` (the
output of ``stream-kt evaluate --parity --json``).  Test metrics, seconds per epoch and
epochs come from its ``metrics.json``; DKT+ rows also carry the consistency metrics.

    python scripts/collect_model_results.py --name assist2009 --pybkt runs/models/pybkt.json \
        runs/models/dkt runs/models/dkt_plus ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONSISTENCY = ("reconstruction_auc", "waviness_l1", "waviness_l2")


def row(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    test = metrics["test"]
    out = {
        "model": config["model"],
        "run": run.name,
        "auc": test["auc"], "acc": test["acc"], "rmse": test["rmse"], "n": test["n"],
        "seconds_per_epoch": metrics["seconds_per_epoch"],
        "epochs": len(metrics["history"]), "best_epoch": metrics["best_epoch"], "valid_auc": metrics["valid_auc"],
        "model_config": config["model_config"],
        "command": (run / "command.txt").read_text().strip(),
    }
    out.update({k: test[k] for k in CONSISTENCY if k in test})
    if (run / "parity.json").is_file():  # `stream-kt evaluate --parity --json` output, when it was run
        out["parity_max_abs_diff"] = json.loads((run / "parity.json").read_text())["parity_max_abs_diff"]
    return out


def markdown(rows: list[dict], pybkt: dict | None) -> str:
    lines = [
        "| model | test AUC | ACC | RMSE | s/epoch | epochs (best) | streamed vs offline | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["auc"]):
        parity = f"{r['parity_max_abs_diff']:.1e}" if "parity_max_abs_diff" in r else "-"
        lines.append(f"| {r['model']} | {r['auc']:.4f} | {r['acc']:.4f} | {r['rmse']:.4f} | {r['seconds_per_epoch']:.1f} | {r['epochs']} ({r['best_epoch']}) | {parity} | `{r['command']}` |")
    for r in rows:
        if "reconstruction_auc" in r:
            lines += ["", f"{r['model']} ({r['run']}) consistency on the test students: reconstruction AUC {r['reconstruction_auc']:.4f}, waviness w1 {r['waviness_l1']:.4f}, w2 {r['waviness_l2']:.4f}."]
    if pybkt:
        lines += ["", "| BKT fit | test AUC | ACC | RMSE | n |", "|---|---|---|---|---|"]
        for name, m in pybkt.items():
            lines.append(f"| {name} | {m['auc']:.4f} | {m['acc']:.4f} | {m['rmse']:.4f} | {m['n']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--name", required=True, help="data set name for the file names")
    parser.add_argument("--pybkt", type=Path, help="scripts/pybkt_compare.py output")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    rows = [row(run) for run in args.runs]
    pybkt = json.loads(args.pybkt.read_text()) if args.pybkt else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"models_{args.name}.json").write_text(json.dumps({"runs": rows, "pybkt": pybkt}, indent=2) + "\n")
    (args.out / f"models_{args.name}.md").write_text(markdown(rows, pybkt))
    print(markdown(rows, pybkt))


if __name__ == "__main__":
    main()
