"""Shared loaders for the deployment checks: the files under deploy/, parsed once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream_kt.service.metrics import NAMES as METRIC_NAMES
from stream_kt.settings import ENV

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
NAMESPACE = "stream-kt"

# Read by `stream-kt serve` besides the StreamSettings fields (settings.ENV); every
# variable the manifests use is a StreamSettings field now.
EXTRA_ENV: set[str] = set()
KNOWN_ENV = set(ENV.values()) | EXTRA_ENV
# Credentials: in the Secret, never in the ConfigMap.
SECRET_ENV = {"REDIS_URL", "KT_KAFKA_SASL_USERNAME", "KT_KAFKA_SASL_PASSWORD"}
# What the processor exports (histograms add _bucket, _sum, _count).
METRICS = set(METRIC_NAMES)


def load_all(path: Path) -> list[dict[str, Any]]:
    import yaml  # each test module skips first when PyYAML is missing

    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="session")
def k8s_docs() -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes manifest, by file name (kustomization.yaml excluded)."""
    return {p.name: load_all(p) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"}


@pytest.fixture(scope="session")
def k8s_objects(k8s_docs: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, over every manifest including the example Secrets."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for docs in k8s_docs.values():
        for doc in docs:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} is defined twice"
            objects[key] = doc
    return objects


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    (doc,) = load_all(DEPLOY / "compose.yaml")
    return doc
