"""deploy/grafana: the dashboard asks only for metrics `stream-kt serve` exports, in queries Prometheus parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import ProcessCollector

from stream_kt.service.metrics import Metrics
from tests.deploy.conftest import DEPLOY, METRICS

DASHBOARD = DEPLOY / "grafana" / "stream-kt.json"
# The metrics every panel group is about: a dashboard that lost one of them fails.
SHOWN = {
    "stream_kt_events_in_total", "stream_kt_events_out_total", "stream_kt_consumer_lag", "stream_kt_dlq_total",
    "stream_kt_end_to_end_latency_seconds", "stream_kt_step_latency_seconds", "stream_kt_batch_fill_ratio",
    "stream_kt_online_auc", "stream_kt_online_logloss", "stream_kt_online_scored_total",
    "stream_kt_redis_errors_total", "stream_kt_kafka_errors_total", "stream_kt_processing_errors_total",
}  # fmt: skip
# Words in a query that are not metric names: aggregations, functions are followed by "(", and these.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def histograms() -> set[str]:
    return {family.name for family in Metrics(process_metrics=False).collect() if family.type == "histogram"}


def process_metrics() -> set[str]:
    """What serve's ProcessCollector exports (sample names: a counter's carry _total)."""
    return {sample.name for family in ProcessCollector(registry=None).collect() for sample in family.samples}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, histogram series (_bucket, _sum, _count)
    as their histogram's name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges ([5m], [$__rate_interval])
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists: "sum by (le) (" is "sum ("
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    names = {
        m.group(1)
        for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
        if m.group(1).lower() not in KEYWORDS
    }
    known_histograms = histograms()
    return {
        re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in known_histograms else n
        for n in names
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def exprs(dashboard) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def test_metric_names_reads_selectors_not_functions_labels_or_keywords():
    expr = (
        'sum by (le, version) (rate(stream_kt_step_latency_seconds_bucket{job="x", version=~"a|b"}[$__rate_interval])) '
        "and on (instance) up > 0.5"
    )
    assert metric_names(expr) == {"stream_kt_step_latency_seconds", "up"}
    assert metric_names(
        'stream_kt_online_auc{window="recent"} < ignoring(window) stream_kt_not_exported_total - 0.05'
    ) == {"stream_kt_online_auc", "stream_kt_not_exported_total"}
    assert metric_names("stream_kt_events_in_total_count") == {
        "stream_kt_events_in_total_count"
    }  # only a histogram's series lose the suffix


def test_every_query_names_only_metrics_serve_exports(exprs):
    used = {name for expr in exprs for name in metric_names(expr)}
    exported = METRICS | process_metrics()
    assert used <= exported, used - exported
    assert SHOWN <= used, SHOWN - used


def test_every_panel_queries_the_dashboards_prometheus_variable(dashboard):
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    graphs = [p for p in panels(dashboard) if p["type"] != "row"]
    assert len(graphs) >= 12
    assert len({p["id"] for p in panels(dashboard)}) == len(panels(dashboard))
    for panel in graphs:
        assert panel["title"] and panel["description"] and panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == f"${{{variable['name']}}}", panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]


def test_online_quality_panels_show_each_model_version(dashboard):
    by_title = {p["title"]: p for p in panels(dashboard)}
    for title, metric in (("Online AUC", "stream_kt_online_auc"), ("Online log-loss", "stream_kt_online_logloss")):
        targets = by_title[title]["targets"]
        assert {t["legendFormat"] for t in targets} == {"{{version}} run", "{{version}} recent"}
        assert all(metric in t["expr"] and "by (version)" in t["expr"] for t in targets)


def test_promtool_parses_every_query(exprs, tmp_path: Path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rules = [
        f"      - record: dashboard:query_{i}\n        expr: {json.dumps(expr.replace('$__rate_interval', '5m'))}\n"
        for i, expr in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text("groups:\n  - name: dashboard\n    rules:\n" + "".join(rules))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(exprs)} rules found" in checked.stdout
