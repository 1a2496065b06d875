"""Deploy files: the Kubernetes manifests pass the API schemas (kubernetes-validate, strict), and both
the manifests and compose give each replica its own volume and share nothing but the database and S3."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="the manifest linter comes with the dev extra: pip install -e '.[dev]'"
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"


def k8s_resources() -> list[dict]:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    documents = [*listed, "secret.example.yaml"]
    return [doc for name in documents for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def resource(kind: str, name: str) -> dict:
    found = [doc for doc in k8s_resources() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}"
    return found[0]


def container_env(pod_spec: dict) -> dict[str, object]:
    container = pod_spec["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def test_every_manifest_passes_the_kubernetes_schemas_strictly():
    version = kubernetes_validate.latest_version()
    for document in k8s_resources():
        kubernetes_validate.validate(document, version, strict=True)


def test_the_linter_catches_a_misspelt_field():
    broken = copy.deepcopy(resource("StatefulSet", "inspect"))
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []  # not volumeMounts
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_k8s_replicas_own_their_volume_and_share_state_only_through_postgres_and_s3():
    stateful = resource("StatefulSet", "inspect")
    pod = stateful["spec"]["template"]["spec"]
    env = container_env(pod)
    claims = stateful["spec"]["volumeClaimTemplates"]
    assert [claim["spec"]["accessModes"] for claim in claims] == [["ReadWriteOnce"]]
    mounts = {mount["name"]: mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]}
    assert mounts == {claims[0]["metadata"]["name"]: env["INSPECT_DATA_DIR"]}
    assert str(env["INSPECT_SPOOL_DIR"]).startswith(str(env["INSPECT_DATA_DIR"]))
    assert "volumes" not in pod  # no shared claim
    assert env["INSPECT_BLOB_STORE"] == "s3" and env["INSPECT_S3_BUCKET"]
    assert env["INSPECT_REPLICA_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "--model" not in pod["containers"][0]["command"]  # the database says which model serves
    assert not [doc for doc in k8s_resources() if doc["kind"] == "PersistentVolumeClaim"]
    assert resource("HorizontalPodAutoscaler", "inspect")["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert resource("Service", stateful["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    secret = resource("Secret", "inspect-secrets")["stringData"]
    assert {"INSPECT_S3_ACCESS_KEY", "INSPECT_S3_SECRET_KEY"} <= set(secret)


def test_compose_gives_each_replica_its_own_spool_volume_and_an_object_store():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    replicas = {name: spec for name, spec in services.items() if name.startswith("inspect-")}
    assert len(replicas) >= 2
    volumes = [tuple(spec["volumes"]) for spec in replicas.values()]
    assert len(set(volumes)) == len(volumes)  # no two replicas share a volume
    for spec in replicas.values():
        env = spec["environment"]
        assert env["INSPECT_BLOB_STORE"] == "s3" and env["INSPECT_S3_ENDPOINT"].startswith("http://objects:")
        assert [v.split(":")[1] for v in spec["volumes"]] == [env["INSPECT_DATA_DIR"]]
        assert env["INSPECT_SPOOL_DIR"].startswith(env["INSPECT_DATA_DIR"])
        assert "--model" not in spec["command"]
    assert len({spec["environment"]["INSPECT_REPLICA_ID"] for spec in replicas.values()}) == len(replicas)
    assert "seaweedfs" in services["objects"]["image"]
