"""deploy/k8s: schema-valid offline, and its objects agree with each other and with stream-kt."""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import pytest

pytest.importorskip("yaml", reason="PyYAML is needed to read the deployment files (pip install pyyaml)")

from stream_kt.commands.settings_flags import settings_from_options  # noqa: E402
from stream_kt.settings import ENV  # noqa: E402
from tests.deploy.conftest import DEPLOY, K8S, KNOWN_ENV, NAMESPACE, SECRET_ENV, load_all  # noqa: E402

# Custom resources: no schema in kubernetes-validate, checked structurally below.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
KUBERNETES_VERSIONS = ("1.29", "1.37")  # an old supported release and the newest bundled
NOT_APPLIED = {"kustomization.yaml", "secret.example.yaml"}
# Kafka's SASL mechanism names, as KEDA's kafka trigger spells them.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
# Set in the Deployment itself, not read by stream-kt.
RUNTIME_ENV = {"OMP_NUM_THREADS"}


def one(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [obj for (k, _), obj in objects.items() if k == kind]
    return found


@pytest.fixture(scope="module")
def deployment(k8s_objects):
    return one(k8s_objects, "Deployment")


@pytest.fixture(scope="module")
def container(deployment):
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def config(k8s_objects, deployment) -> dict[str, str]:
    (ref,) = [
        source["configMapRef"]["name"]
        for source in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        if "configMapRef" in source
    ]
    return k8s_objects[("ConfigMap", ref)]["data"]


@pytest.fixture(scope="module")
def secret(k8s_objects, deployment) -> dict[str, str]:
    (ref,) = [
        source["secretRef"]["name"]
        for source in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        if "secretRef" in source
    ]
    return k8s_objects[("Secret", ref)]["stringData"]


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def test_every_object_is_named_and_in_the_namespace(k8s_docs):
    for name, docs in k8s_docs.items():
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), name
            assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE, name


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_objects_match_the_kubernetes_openapi_schema(k8s_docs, version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (bundles the schemas)")
    checked = set()
    for name, docs in k8s_docs.items():
        for doc in docs:
            try:
                kv.validate(doc, version, strict=True)  # strict: unknown fields are errors
                checked.add(doc["kind"])
            except kv.SchemaNotFoundError:
                assert doc["kind"] in CRD_KINDS, f"{name}: no schema for {doc['apiVersion']} {doc['kind']}"
            except kv.ValidationError as exc:
                pytest.fail(f"{name} {doc['kind']}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert checked == {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}


def test_schema_check_catches_a_misspelled_field(deployment):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (bundles the schemas)")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_exactly_the_manifests_present(k8s_objects):
    (kustomization,) = load_all(K8S / "kustomization.yaml")
    present = {p.name for p in K8S.glob("*.yaml")} - NOT_APPLIED
    assert sorted(kustomization["resources"]) == sorted(present)
    assert len(kustomization["resources"]) == len(set(kustomization["resources"]))
    assert kustomization["namespace"] == one(k8s_objects, "Namespace")["metadata"]["name"] == NAMESPACE


def test_kubectl_kustomize_renders(k8s_docs):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    import yaml

    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    listed = [doc for name, docs in k8s_docs.items() if name not in NOT_APPLIED for doc in docs]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in listed
    )
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in rendered if d["kind"] != "Namespace")


def test_deployment_runs_the_checkpoint_safely(deployment, container):
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    assert container["args"][:2] == ["--checkpoint", "/models/current"]
    assert pod["terminationGracePeriodSeconds"] >= 30, "SIGTERM drains: finish the batch, write state, commit"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    model = mounts["/models/current"]
    assert model["readOnly"] and volumes[model["name"]]["persistentVolumeClaim"]["readOnly"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "the only writable path: caches under /tmp"


def test_probes_use_the_metrics_port(container, config):
    (port,) = container["ports"]
    assert port["name"] == "metrics" and str(port["containerPort"]) == config["KT_METRICS_PORT"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_environment_names_are_known_and_secrets_stay_secret(container, config, secret):
    assert set(config) <= KNOWN_ENV, set(config) - KNOWN_ENV
    assert set(secret) <= KNOWN_ENV, set(secret) - KNOWN_ENV
    assert set(ENV.values()) <= set(config) | set(secret), "a StreamSettings variable is set nowhere"
    assert not SECRET_ENV & set(config) and SECRET_ENV <= set(secret)
    assert {e["name"] for e in container.get("env", [])} <= KNOWN_ENV | RUNTIME_ENV


def test_example_secrets_hold_placeholders_only(k8s_docs):
    for doc in k8s_docs["secret.example.yaml"]:
        assert doc["kind"] == "Secret" and "data" not in doc, "stringData only: base64 would hide a real value"
        for name, value in doc["stringData"].items():
            assert "CHANGE_ME" in value or name == "KT_KAFKA_SASL_USERNAME", f"{name} is not a placeholder"


def test_settings_from_the_configmap_and_secret_validate(config, secret):
    settings = settings_from_options({}, environ={**config, **secret})
    assert settings.partitions == int(config["KT_PARTITIONS"])


def test_kafka_ca_file_is_mounted_from_its_secret(k8s_objects, deployment, container, config):
    ca_file = config["KT_KAFKA_SSL_CAFILE"]
    directory, _, key = ca_file.rpartition("/")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert key in k8s_objects[("Secret", volume["secret"]["secretName"])]["stringData"]


def test_metrics_service_and_servicemonitor_reach_the_pods(k8s_objects, deployment, container):
    service = one(k8s_objects, "Service")
    (port,) = service["spec"]["ports"]
    assert service["spec"]["type"] == "ClusterIP" and port["port"] == 9108
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    assert port["targetPort"] in {p["name"] for p in container["ports"]} | {
        p["containerPort"] for p in container["ports"]
    }
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(port["port"])
    monitor = one(k8s_objects, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {port["name"]}


def test_pdb_covers_the_processor_pods(k8s_objects, deployment):
    pdb = one(k8s_objects, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    assert pdb["spec"]["maxUnavailable"] == 1


def test_keda_scales_on_the_processors_own_group_and_topic(k8s_objects, deployment, config, secret):
    scaled = one(k8s_objects, "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # partitions bound parallelism: replicas beyond them would sit idle
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= int(config["KT_PARTITIONS"])
    assert spec["minReplicaCount"] <= deployment["spec"]["replicas"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == config["KT_GROUP_ID"]
    assert meta["topic"] == config["KT_IN_TOPIC"]
    assert meta["allowIdleConsumers"] == "false"
    assert meta["sasl"] == KEDA_SASL[config["KT_KAFKA_SASL_MECHANISM"]]
    assert (meta["tls"] == "enable") == config["KT_KAFKA_SECURITY_PROTOCOL"].endswith("SSL")
    auth = k8s_objects[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in k8s_objects[("Secret", ref["name"])]["stringData"], ref


def test_prometheusrule_matches_the_compose_alerts(k8s_objects):
    (alerts,) = load_all(DEPLOY / "prometheus" / "alerts.yml")
    assert one(k8s_objects, "PrometheusRule")["spec"]["groups"] == alerts["groups"]
