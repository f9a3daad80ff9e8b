"""The distillation table: teacher, distilled students and their undistilled twins, over seeds.

    python -m benchmarks.distill_results --runs runs [--seeds 0,1,2] [--out benchmarks/results/distill_assist2009.json]
    python -m benchmarks.distill_results --table 0910c --runs runs/c --out benchmarks/results/table_0910c.json

``--table 0910c`` reads the leak-free ``0910_c`` table's rows instead (every model, the
ensemble and the distilled student; run names in benchmarks/results/README.md);
``--keep FILE`` takes the runs of an earlier output of this script for the seeds whose
checkpoints are not under ``--runs`` (their metrics and streamed cost as recorded there);
``--from-compare DIR ...`` first links ``stream-kt compare`` output directories' runs
under ``--runs`` by those names, with their held-out metrics from ``compare_runs.json``.

Each row is a kind of checkpoint, one per seed, found under ``--runs`` by the names the
commands in benchmarks/results/README.md give them (``{seed}`` is the seed).  Held-out
metrics come from each checkpoint's ``metrics.json`` (``train``, ``refit`` and ``distill``
write them when given ``--test-data``), else from the last line of
``logs/test_<run>.log`` (``stream-kt evaluate --json``: an ensemble built by ``ensemble``
records none).  Parity is the last line of ``logs/parity_<run>.log`` (``evaluate
--parity --json``) where it was run.  Streamed cost is ``compare``'s measure
(``step_cost_us``: the eager backend's one-step update, 64 students per call), taken
here, now, for every checkpoint: run it on a quiet machine.  Writes the JSON, a PNG of
the test AUCs and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stream_kt.checkpoint import Checkpoint, load_checkpoint
from stream_kt.training.compare import plot_auc, step_cost_us

# label -> (run directory under --runs per seed, the bar's name in the PNG)
ROWS = {
    "ensemble of Last-Query w400, DKT+, gbdt; refit": ("ens_s{seed}_refit", "ensemble\nrefit"),
    "ensemble (the teacher), early-stopped": ("ens_s{seed}", "ensemble\n(teacher)"),
    "gbdt (lr 0.05, 63 leaves)": ("gbdt_s{seed}", "gbdt"),
    "Last-Query w400": ("lq_w400_s{seed}", "Last-Query\nw400"),
    "Last-Query": ("lq_s{seed}", "Last-Query"),
    "DKT+": ("dktp_s{seed}", "DKT+"),
    "distilled Last-Query, 30 epochs": ("dist_lq_s{seed}", "distilled\nLast-Query 30"),
    "distilled Last-Query, up to 60 epochs": ("dist_lq_e60_s{seed}", "distilled\nLast-Query 60"),
    "distilled DKT+, 30 epochs": ("dist_dktp_s{seed}", "distilled\nDKT+ 30"),
    "distilled DKT+, up to 60 epochs": ("dist_dktp_e60_s{seed}", "distilled\nDKT+ 60"),
    "distilled DKT+, up to 150 epochs": ("dist_dktp_e150_s{seed}", "distilled\nDKT+ 150"),
    "distilled DKT+, alpha 0.1, up to 150 epochs": ("dist_dktp_a01_s{seed}", "distilled DKT+\nalpha 0.1"),
    "distilled DKT+, alpha 0.03, up to 150 epochs": ("dist_dktp_a003_s{seed}", "distilled DKT+\nalpha 0.03"),
    "distilled DKT+, alpha 0.1, hidden 400, up to 150 epochs": (
        "dist_dktp_a01_h400_s{seed}",
        "distilled DKT+\nalpha 0.1, h400",
    ),
    "distilled DKT+, alpha 0.1, training window 400, up to 150 epochs": (
        "dist_dktp_a01_w400_s{seed}",
        "distilled DKT+\nalpha 0.1, w400",
    ),
    "distilled DKT+, cross-fitted targets (K=2), 30 epochs": ("cv_dktp_s{seed}", "distilled DKT+ 30\ncross-fitted"),
}
# the leak-free 0910_c table: every model, the ensemble and its distilled student
ROWS_0910C = {
    "ensemble of gbdt and DKT+ (weights fitted on validation)": ("ens_s{seed}", "ensemble\ngbdt, DKT+"),
    "gbdt": ("gbdt_s{seed}", "gbdt"),
    "distilled DKT+ (the ensemble's student), alpha 0.1, up to 60 epochs": (
        "dist_dktp_e60_s{seed}",
        "distilled\nDKT+ 60",
    ),
    "distilled DKT+ (the ensemble's student), alpha 0.1, up to 30 epochs": ("dist_dktp_s{seed}", "distilled\nDKT+ 30"),
    "Last-Query": ("lq_s{seed}", "Last-Query"),
    "DKT+": ("dktp_s{seed}", "DKT+"),
    "DKT": ("dkt_s{seed}", "DKT"),
    "SAKT": ("sakt_s{seed}", "SAKT"),
    "SAINT": ("saint_s{seed}", "SAINT"),
    "SAINT+": ("saint_plus_s{seed}", "SAINT+"),
    "BKT": ("bkt_s{seed}", "BKT"),
}
TABLES = {
    "distill": (
        ROWS,
        "ASSISTments 2009 skill_id: test AUC, mean ± std over seeds",
        {"distillation target 0.826": 0.826, "ensemble 0.830": 0.830},
    ),
    "0910c": (
        ROWS_0910C,
        "ASSISTments 2009 0910_c (leak-free): test AUC, mean ± std over seeds",
        {"target: DKT + 0.02": 0.7641},
    ),
}
REPORTED = ("auc", "acc", "rmse")


def _last_json(runs: Path, kind: str, run: str) -> dict | None:
    log = runs / "logs" / f"{kind}_{run.replace('/', '_')}.log"
    if not log.is_file():
        return None
    lines = log.read_text().strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None


RUN_NAMES = {"dkt_plus": "dktp", "lastquery": "lq"}  # compare's model name -> the tables' run name, where they differ


def link_compare_runs(runs: Path, compare_dirs: list[Path]) -> None:
    """``compare``'s run ``OUT/<model>/run<seed>`` as ``runs/<name>_s<seed>``, its held-out metrics as the test log."""
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    for compare_dir in compare_dirs:
        for run in json.loads((compare_dir / "compare_runs.json").read_text())["runs"]:
            name = f"{RUN_NAMES.get(run['model'], run['model'])}_s{run['seed']}"
            if not (runs / name).exists():
                (runs / name).symlink_to((compare_dir / run["model"] / f"run{run['seed']}").resolve())
            held_out = {k: run[k] for k in (*REPORTED, "n")}
            (runs / "logs" / f"test_{name}.log").write_text(json.dumps(held_out) + "\n")


def test_metrics(checkpoint: Checkpoint, runs: Path, run: str) -> dict | None:
    if "test" in checkpoint.metrics:
        return checkpoint.metrics["test"]
    return _last_json(runs, "test", run) or _last_json(runs, "parity", run)


def collect(
    runs: Path,
    seeds: list[int],
    step_batch: int,
    table: dict[str, tuple[str, str]] = ROWS,
    kept: dict[str, dict] | None = None,
) -> dict:
    """Every row's runs found under ``runs``; a seed whose checkpoint is not there is taken from ``kept``
    (an earlier output of this script: its run, metrics and streamed cost as recorded then) where it has it."""
    rows = {}
    for label, (pattern, _) in table.items():
        found = []
        for seed in seeds:
            run = pattern.format(seed=seed)
            if not (runs / run / "config.json").is_file():
                earlier = [r for r in (kept or {}).get(label, {}).get("runs", []) if r["seed"] == seed]
                found.extend({**r, "kept": True} for r in earlier)
                continue
            checkpoint = load_checkpoint(runs / run)
            test = test_metrics(checkpoint, runs, run)
            if test is None:
                print(f"{run}: no held-out metrics, left out", file=sys.stderr)
                continue
            parity = _last_json(runs, "parity", run)
            distill = checkpoint.train_config.get("distill")
            found.append(
                {
                    "seed": seed,
                    "checkpoint": str(Path(runs.name) / run),  # as the documented commands name it
                    "version": checkpoint.version,
                    **{k: test[k] for k in (*REPORTED, "n")},
                    "valid_auc": checkpoint.metrics.get("valid_auc"),
                    "best_epoch": checkpoint.metrics.get("best_epoch"),
                    "parity_max_abs_diff": None if parity is None else parity.get("parity_max_abs_diff"),
                    "step_us_per_event": step_cost_us(checkpoint.model, step_batch),
                    **(
                        {
                            "teacher": distill["teacher"]["version"],
                            "alpha": distill["alpha"],
                            "temperature": distill["temperature"],
                            "folds": distill.get("folds", 1),
                        }
                        if distill
                        else {}
                    ),
                }
            )
        if not found:
            continue
        row: dict = {"runs": found, "seeds": [r["seed"] for r in found]}
        for key in (*REPORTED, "step_us_per_event"):
            values = np.array([r[key] for r in found], dtype=np.float64)
            row[f"{key}_mean"], row[f"{key}_std"] = float(values.mean()), float(values.std())
        parities = [r["parity_max_abs_diff"] for r in found if r["parity_max_abs_diff"] is not None]
        row["parity_max_abs_diff"] = max(parities) if parities else None
        rows[label] = row
    return rows


def markdown(rows: dict) -> str:
    lines = [
        "| model | seeds | test AUC | ACC | RMSE | streamed µs/event | parity (max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        one_seed = len(row["seeds"]) == 1  # no spread to report
        cells = " | ".join(
            f"{row[f'{k}_mean']:.4f}" + ("" if one_seed else f" ± {row[f'{k}_std']:.4f}") for k in REPORTED
        )
        parity = "" if row["parity_max_abs_diff"] is None else f"{row['parity_max_abs_diff']:.1e}"
        lines.append(
            f"| {label} | {', '.join(map(str, row['seeds']))} | {cells} | "
            f"{row['step_us_per_event_mean']:,.1f} | {parity} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--step-batch", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads for the streamed cost (compare's table used 2)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill_assist2009.json"))
    parser.add_argument("--table", choices=sorted(TABLES), default="distill", help="which table's rows to read")
    parser.add_argument("--from-compare", type=Path, nargs="*", default=[], help="compare output directories to link")
    parser.add_argument(
        "--keep",
        type=Path,
        help="an earlier JSON of this table: its runs, as recorded, for seeds whose checkpoints are not under --runs",
    )
    args = parser.parse_args()
    link_compare_runs(args.runs, args.from_compare)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    table, title, references = TABLES[args.table]
    kept = json.loads(args.keep.read_text())["models"] if args.keep else None
    rows = collect(args.runs, seeds, args.step_batch, table, kept)
    if not rows:
        sys.exit(f"{args.runs}: none of the runs this table reads is there")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU",
        "seeds": seeds,
        "step_cost_method": f"stream_kt.training.compare.step_cost_us: eager backend, {args.step_batch} students "
        f"per call, {args.threads} torch threads, 30 calls after 3 warm-up",
        "models": rows,
        **({"kept_from": f"{args.keep} (runs marked kept: as recorded there)"} if args.keep else {}),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    bars = {table[label][1]: {"auc_mean": row["auc_mean"], "auc_std": row["auc_std"]} for label, row in rows.items()}
    plot = args.out.with_name(args.out.stem + "_auc.png")
    plot_auc(bars, plot, title, references)
    print(markdown(rows))
    print(f"wrote {args.out} and {plot}")


if __name__ == "__main__":
    main()
