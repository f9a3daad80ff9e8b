"""The benchmark's variants are real pipelines: each answers every event (speed is not asserted here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_kt.models import build_model
from stream_kt.tools.bench.alternatives import RecomputeWindow
from stream_kt.tools.bench.end_to_end import Target, processes_cpu_s, run_variant
from stream_kt.tools.bench.run import broker_plan, summarise
from stream_kt.tools.bench.workload import bench_students, default_checkpoint
from stream_kt.tools.processes import RedisServer, start_replicated


def test_recompute_window_equals_the_carried_state_inside_the_window():
    torch.manual_seed(0)
    model = build_model("dkt", num_items=12, hidden_size=16, embed_dim=8).eval()
    recompute = RecomputeWindow(model, window=100)
    carried, window = model.initial_state(3), recompute.initial_state(3)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(80):
            items, correct = (
                torch.randint(0, 12, (3,), generator=generator),
                torch.randint(0, 2, (3,), generator=generator),
            )
            a, b = model.step(carried, items, correct), recompute.step(window, items, correct)
            np.testing.assert_allclose(b.mastery.numpy(), a.mastery.numpy(), atol=1e-5)
            np.testing.assert_allclose(b.p_correct.numpy(), a.p_correct.numpy(), atol=1e-5)
            carried, window = a.state, b.state


@pytest.mark.parametrize("variant", ["stream-kt", "handwritten", "naive", "recompute"])
def test_each_variant_answers_every_event(broker, redis_url, tmp_path, variant):
    checkpoint = default_checkpoint(tmp_path)
    students = bench_students(checkpoint.vocab, 400)
    target = Target(broker.bootstrap, redis_url, Path(checkpoint.path), "cpu", 16)
    result = run_variant(target, variant, students, latency_seconds=0.2, progress=False)
    events = sum(len(s) for s in students)
    assert result["events"] == events and result["answered"] == events
    assert result["processor"]["outputs"] >= events + sum(l["sent"] for l in result["latency"])
    assert [l["fraction"] for l in result["latency"]] == [0.1, 0.5, 0.9]
    assert all(l["missing"] == 0 and l["p99_ms"] is not None for l in result["latency"])
    assert result["batch"] == {"stream-kt": 16, "handwritten": 16, "naive": 1, "recompute": 64}[variant]
    assert result["load_generator_cpu_us_per_event"] > 0 and result["follower_cpu_us_per_event"] > 0
    assert 0 < result["drain_cpu_us_per_event"] < 1e5


def test_the_shadow_variant_answers_every_event_and_the_summary_prices_the_shadow(broker, redis_url, tmp_path):
    checkpoint, shadow = default_checkpoint(tmp_path), default_checkpoint(tmp_path / "shadow", seed=1)
    assert shadow.version != checkpoint.version  # another model version: serve refuses to shadow itself
    students = bench_students(checkpoint.vocab, 400)
    target = Target(broker.bootstrap, redis_url, Path(checkpoint.path), "cpu", 16, shadow=Path(shadow.path))
    alone, shadowed = (
        run_variant(target, variant, students, latency_seconds=0.2, progress=False)
        for variant in ("stream-kt", "stream-kt+shadow")
    )
    events = sum(len(s) for s in students)
    assert alone["answered"] == shadowed["answered"] == events and shadowed["batch"] == 16
    others = [{**alone, "variant": v} for v in ("handwritten", "naive", "recompute")]
    summary = summarise({"backend": "cpu", "step": [], "end_to_end": [alone, shadowed, *others], "seconds": 1.0})
    assert summary["shadow_added_cpu_us_per_event"] == round(
        shadowed["drain_cpu_us_per_event"] - alone["drain_cpu_us_per_event"], 1
    )
    assert summary["shadow_events_per_s"] == shadowed["events_per_s"]
    assert [variants for _, variants in broker_plan("h:1", "auto", shadow=True)] == [
        ("stream-kt", "stream-kt+shadow", "handwritten", "recompute", "naive")
    ]


@pytest.mark.skipif(not RedisServer.available(), reason="no redis-server binary")
def test_with_redis_replicas_stream_kt_waits_for_them_before_each_commit(kafka_broker, tmp_path):
    """``bench --redis-replicas 1``: a primary and a replica of our own; every batch of the
    stream-kt run WAITs for it."""
    checkpoint = default_checkpoint(tmp_path)
    students = bench_students(checkpoint.vocab, 400)
    primary, replica = start_replicated(tmp_path / "redis", 1)
    try:
        assert primary.client().info("replication")["connected_slaves"] == 1
        target = Target(
            kafka_broker.bootstrap,
            primary.url,
            Path(checkpoint.path),
            "cpu",
            16,
            broker="kafka",
            broker_pids=(kafka_broker.process.pid,),
            redis_min_replicas=1,
        )
        result = run_variant(target, "stream-kt", students, latency_seconds=0.2, progress=False)
        waits = primary.client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
    finally:
        for node in (replica, primary):
            node.stop()
    events = sum(len(s) for s in students)
    assert result["answered"] == events and result["redis_min_replicas"] == 1
    assert waits >= events / 16  # at least one WAIT per batch of the drain
    assert result["broker_cpu_us_per_event"] > 0  # the broker's process, measured


def test_the_plan_of_a_cluster_or_stream_kt_alone_and_their_summary():
    assert broker_plan(None, "auto", nodes=3) == [("kafka-3-nodes", ("stream-kt", "handwritten", "recompute", "naive"))]
    assert broker_plan(None, "kafka", nodes=3, alternatives=False) == [("kafka-3-nodes", ("stream-kt",))]
    assert broker_plan(None, "kafka", alternatives=False) == [("kafka", ("stream-kt",))]
    latency = [{"fraction": f, "p50_ms": 10.0 * f, "p99_ms": 100.0 * f} for f in (0.1, 0.5, 0.9)]
    row = {
        "variant": "stream-kt",
        "broker": "kafka-3-nodes",
        "redis_min_replicas": 1,
        "events_per_s": 5000.0,
        "drain_cpu_us_per_event": 90.0,
        "cpu_ms_per_event": 0.1,
        "broker_cpu_us_per_event": 300.0,
        "load_generator_cpu_us_per_event": 20.0,
        "follower_cpu_us_per_event": 10.0,
        "latency": latency,
    }
    summary = summarise({"backend": "cpu", "step": [], "end_to_end": [row], "seconds": 1.0})
    assert (summary["broker"], summary["redis_min_replicas"], summary["events_per_s"], summary["p99_ms"]) == (
        "kafka-3-nodes",
        1,
        5000.0,
        50.0,
    )
    assert "speedup_vs_naive" not in summary
    assert processes_cpu_s(()) is None and processes_cpu_s((os.getpid(),)) > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--nodes", "3", "--bootstrap", "h:1"],
            "--nodes 3 starts an Apache Kafka cluster of our own: not with --bootstrap or --broker embedded",
        ),
        (
            ["--nodes", "3", "--broker", "embedded"],
            "--nodes 3 starts an Apache Kafka cluster of our own: not with --bootstrap or --broker embedded",
        ),
        (
            ["--redis-replicas", "1", "--update-record"],
            "--update-record writes the committed single-node record: not with --nodes, "
            "--redis-replicas or --stream-kt-only",
        ),
    ],
)
def test_a_cluster_or_replicas_where_they_cannot_be_is_one_line(extra, message, capsys):
    from stream_kt.cli import main

    assert main(["bench", *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"stream-kt bench: error: {message}"]


@pytest.mark.slow
def test_bench_step_only_prints_a_json_summary(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "stream_kt.cli", "bench", "--skip-e2e", "--backend", "cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["backend"] == "cpu" and summary["step_throughput_b256"] > 0
    assert (tmp_path / "step_throughput.png").stat().st_size > 1000
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["backend"] for r in results["step"]} >= {"eager", "cpu"}


@pytest.mark.slow
def test_bench_in_a_fresh_clone_writes_its_results_outside_the_tracked_files(tmp_path):
    """``bench --skip-e2e --json`` as a user runs it from a checkout: results in ./bench-results, git status clean."""
    root = Path(__file__).parents[2]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True, timeout=120)
    command = [sys.executable, "-m", "stream_kt.cli", "bench", "--skip-e2e", "--json", "--backend", "cpu"]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=clone, env={**os.environ, "PYTHONPATH": str(clone)}
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "end to end" not in out.stdout  # no section without rows
    assert json.loads(out.stdout.strip().splitlines()[-1])["step_throughput_b256"] > 0
    results = json.loads((clone / "bench-results" / "results.json").read_text())
    assert results["end_to_end"] == [] and {r["backend"] for r in results["step"]} >= {"eager", "cpu"}
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"], capture_output=True, text=True, cwd=clone, check=True
    )
    assert status.stdout == ""


def test_the_table_of_a_step_only_run_has_no_end_to_end_section():
    from stream_kt.tools.bench.report import table

    step = [
        {"backend": "cpu", "batch": batch, "student_steps_per_s": 1000.0 * batch, "us_per_step": 1000.0 / batch}
        for batch in (1, 64)
    ]
    assert table({"step": step, "end_to_end": []}).splitlines() == [
        "model step throughput (student-steps/s)",
        "   backend  batch      steps/s   us/step",
        "       cpu      1        1,000    1000.0",
        "       cpu     64       64,000      15.6",
    ]


@pytest.mark.parametrize("extra", [["--skip-e2e"], ["--out", "elsewhere"]])
def test_updating_the_committed_record_takes_a_whole_run_into_it(extra, capsys):
    from stream_kt.cli import main

    assert main(["bench", "--update-record", *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "stream-kt bench: error: --update-record writes the whole committed record "
        "(the README cites its end-to-end figures): not with --skip-e2e or --out"
    ]


def test_updating_the_committed_record_outside_a_checkout_is_one_line(tmp_path, monkeypatch, capsys):
    """``--update-record`` writes ``benchmarks/results/`` of the checkout in the current
    directory: none in ``tmp_path``."""
    from stream_kt.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--update-record"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "stream-kt bench: error: --update-record writes benchmarks/results/ of the checkout in the current directory, "
        "and there is none here: run it from the repository's root"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_end_to_end_leaves_the_end_to_end_plot_as_it_was(tmp_path):
    from stream_kt.tools.bench.report import plot

    shipped = Path(__file__).parents[2] / "benchmarks" / "results" / "end_to_end.png"
    (tmp_path / "end_to_end.png").write_bytes(shipped.read_bytes())
    step = [
        {"backend": backend, "batch": batch, "student_steps_per_s": 1000.0 * batch}
        for backend in ("eager", "cpu")
        for batch in (1, 64, 256)
    ]
    paths = plot({"step": step, "machine": "test", "end_to_end": []}, tmp_path)  # what bench --skip-e2e plots
    assert paths == [tmp_path / "step_throughput.png"]
    assert (tmp_path / "end_to_end.png").read_bytes() == shipped.read_bytes()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_on_cuda_without_a_gpu_fails_in_one_clear_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "stream_kt.cli", "bench", "--skip-e2e", "--backend", "cuda", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "stream-kt bench: error: cuda backend needs a CUDA GPU and a CUDA build of torch; none found"
    ]
    assert not (tmp_path / "results.json").exists()


class CpuStandIn:
    """Stands in for CudaGraphBackend: the same staged code path on the CPU; B >= ``fits`` runs out of memory."""

    fits = 10**9

    def __new__(cls, model, batch_size, mastery_dtype=torch.float32, graphs=True):
        from stream_kt.backends.staged import StagedBackend

        if batch_size >= cls.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (stand-in)")
        return StagedBackend(model, batch_size, "cpu", mastery_dtype)


def test_cuda_sweep_reports_each_variant_against_b_and_the_bytes_each_step_copies(monkeypatch):
    from stream_kt.backends import compiled
    from stream_kt.tools.bench import step_throughput

    monkeypatch.setattr(compiled, "CudaGraphBackend", CpuStandIn)
    model = build_model("dkt", num_items=12, embed_dim=8, hidden_size=24).eval()
    rows, skipped = step_throughput.cuda_step_throughput(model, [4, 16], min_seconds=0.01, progress=False)
    assert [(r["backend"], r["batch"]) for r in rows] == [
        (v, b) for v in ("cuda", "cuda-eager", "cuda-f16") for b in (4, 16)
    ]
    assert skipped == [] and all(r["student_steps_per_s"] > 0 for r in rows)
    # to the GPU: c, h (2 x 24 float32) + items, correct (int64) + times (2 float32: every step takes them);
    # back: p_correct + c, h + mastery (12 float32, or float16)
    assert {r["backend"]: (r["bytes_to_gpu_per_step"], r["bytes_from_gpu_per_step"]) for r in rows} == {
        "cuda": (2 * 24 * 4 + 16 + 8, 4 + 2 * 24 * 4 + 12 * 4),
        "cuda-eager": (2 * 24 * 4 + 16 + 8, 4 + 2 * 24 * 4 + 12 * 4),
        "cuda-f16": (2 * 24 * 4 + 16 + 8, 4 + 2 * 24 * 4 + 12 * 2),
    }


def test_cuda_sweep_skips_the_batches_that_do_not_fit(monkeypatch):
    from stream_kt.backends import compiled
    from stream_kt.tools.bench import step_throughput

    monkeypatch.setattr(compiled, "CudaGraphBackend", type("Small", (CpuStandIn,), {"fits": 16}))
    model = build_model("dkt", num_items=12, embed_dim=8, hidden_size=24).eval()
    rows, skipped = step_throughput.cuda_step_throughput(model, [4, 16, 64], min_seconds=0.01, progress=False)
    assert [(r["backend"], r["batch"]) for r in rows] == [("cuda", 4), ("cuda-eager", 4), ("cuda-f16", 4)]
    assert [(s["backend"], s["batch"], s["reason"]) for s in skipped] == [
        (v, b, "out of GPU memory") for v in ("cuda", "cuda-eager", "cuda-f16") for b in (16, 64)
    ]


def test_bench_with_a_bootstrap_that_is_not_kafka_stops_before_measuring(redis_url, tmp_path, capsys):
    from urllib.parse import urlsplit

    from stream_kt.cli import main

    address = f"{urlsplit(redis_url).hostname}:{urlsplit(redis_url).port or 6379}"  # Redis answers there, not Kafka
    assert main(["bench", "--bootstrap", address, "--kafka-connect-timeout-s", "1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"stream-kt bench: error: cannot reach the Kafka broker at {address}: no Kafka answer within 1 s "
        "(is that a Kafka broker's address? KT_KAFKA_CONNECT_TIMEOUT_S sets the wait)"
    )
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written
