"""Human table and PNG plots for ``stream-kt bench`` results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def table(results: dict) -> str:
    lines = ["model step throughput (student-steps/s)", f"{'backend':>10} {'batch':>6} {'steps/s':>12} {'us/step':>9}"]
    for row in results["step"]:
        lines.append(
            f"{row['backend']:>10} {row['batch']:>6} {row['student_steps_per_s']:>12,.0f} {row['us_per_step']:>9.1f}"
        )
    if not results["end_to_end"]:  # --skip-e2e: no section for rows that were not measured
        return "\n".join(lines)
    lines += [
        "",
        "end to end (real broker + Redis)",
        f"{'broker':>8} {'variant':>16} {'B':>4} {'events/s':>10} {'drain us/ev':>11} {'run us/ev':>9} "
        f"{'broker us/ev':>12} {'redis rt/ev':>11}  latency p50/p95/p99 ms at 10% | 50% | 90% of max",
    ]
    for row in results["end_to_end"]:
        latency = " | ".join(f"{l['p50_ms']}/{l['p95_ms']}/{l['p99_ms']}" for l in row["latency"])
        broker_us = "-" if row.get("broker_cpu_us_per_event") is None else f"{row['broker_cpu_us_per_event']:,.1f}"
        drain_us = "-" if row.get("drain_cpu_us_per_event") is None else f"{row['drain_cpu_us_per_event']:,.1f}"
        lines.append(
            f"{row.get('broker', '?'):>8} {row['variant']:>16} {row['batch']:>4} {row['events_per_s']:>10,.0f} "
            f"{drain_us:>11} {1000 * row['cpu_ms_per_event']:>9,.1f} {broker_us:>12} "
            f"{row['redis_round_trips_per_event']:>11.3f}  {latency}"
        )
    return "\n".join(lines)


def plot(results: dict, out_dir: Path) -> list[Path]:
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in dict.fromkeys(r["backend"] for r in results["step"]):
        rows = [r for r in results["step"] if r["backend"] == backend]
        ax.plot([r["batch"] for r in rows], [r["student_steps_per_s"] for r in rows], marker="o", label=backend)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("student-steps / s")
    ax.set_title(f"{results.get('model_name', 'dkt')} one-step update throughput ({results['machine']})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "step_throughput.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    e2e = results["end_to_end"]
    if not e2e:  # --skip-e2e: keep whatever end-to-end plot is there
        return paths
    fig, (ax_rate, ax_latency) = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = [f"{r['variant']}\n{r.get('broker', '')}" for r in e2e]
    bars = ax_rate.bar(
        labels,
        [r["events_per_s"] for r in e2e],
        color=["tab:green" if r["variant"] == "stream-kt" else "tab:grey" for r in e2e],
    )
    ax_rate.bar_label(bars, fmt="{:,.0f}")
    ax_rate.set_ylabel("sustained events / s")
    ax_rate.set_title("end to end throughput")
    for row in e2e:
        rates = [l["offered_per_s"] for l in row["latency"]]
        name = f"{row['variant']} ({row.get('broker', '')})"
        ax_latency.plot(rates, [l["p99_ms"] for l in row["latency"]], marker="o", label=f"{name} p99")
        ax_latency.plot(rates, [l["p50_ms"] for l in row["latency"]], marker="x", linestyle="--", label=f"{name} p50")
    ax_latency.set_xscale("log")
    ax_latency.set_yscale("log")
    ax_latency.set_xlabel("offered events / s")
    ax_latency.set_ylabel("event-to-mastery latency (ms)")
    ax_latency.set_title("latency at 10%, 50%, 90% of each variant's max")
    ax_latency.grid(True, which="both", alpha=0.3)
    ax_latency.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "end_to_end.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def plot_profiles(profiles: list[tuple[str, dict]], path: Path) -> Path:
    """Stacked bars of ``benchmarks.profile_engine`` results: CPU µs per event, split by where it went."""
    buckets = list(dict.fromkeys(row["bucket"] for _, profile in profiles for row in profile["buckets"]))
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.9 * len(profiles)))
    colours = plt.get_cmap("tab20")
    labels = [label for label, _ in profiles]
    for n, (_, profile) in enumerate(profiles):
        left = 0.0
        us = {row["bucket"]: row["us_per_event"] for row in profile["buckets"]}
        for k, name in enumerate(buckets):
            width = us.get(name, 0.0)
            ax.barh(n, width, left=left, color=colours(k % 20), label=name if n == 0 else None)
            left += width
        ax.text(left + 1, n, f"{profile['us_per_event']:.1f} µs", va="center")
    ax.set_xlim(0, 1.15 * max(profile["us_per_event"] for _, profile in profiles))
    ax.set_yticks(range(len(profiles)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("serve's CPU µs per event (py-spy shares of the worker's CPU time)")
    ax.legend(
        fontsize=7,
        ncol=3,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(profiles) < 3 else -0.2),
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
