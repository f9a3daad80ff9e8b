"""benchmarks.distill_results --from-compare: compare's runs linked under the tables' run names."""

from __future__ import annotations

import json

from benchmarks.distill_results import ROWS_0910C, link_compare_runs


def test_compare_runs_are_linked_by_the_tables_run_names_with_their_held_out_metrics(tmp_path) -> None:
    compare_dir, runs = tmp_path / "c_dkt", tmp_path / "runs"
    held_out = {"auc": 0.75, "acc": 0.72, "rmse": 0.43, "n": 51579}
    listed = [{"model": m, "seed": s, **held_out} for m in ("dkt", "dkt_plus", "lastquery") for s in (0, 1)]
    for run in listed:
        (compare_dir / run["model"] / f"run{run['seed']}").mkdir(parents=True)
    (compare_dir / "compare_runs.json").write_text(json.dumps({"runs": listed}))
    link_compare_runs(runs, [compare_dir])
    patterns = {pattern for pattern, _ in ROWS_0910C.values()}
    for model, name in (("dkt", "dkt"), ("dkt_plus", "dktp"), ("lastquery", "lq")):
        assert f"{name}_s{{seed}}" in patterns  # the name the 0910_c table reads
        for seed in (0, 1):
            link = runs / f"{name}_s{seed}"
            assert link.is_symlink() and link.resolve() == (compare_dir / model / f"run{seed}").resolve()
            assert json.loads((runs / "logs" / f"test_{name}_s{seed}.log").read_text()) == held_out
