"""Build the Triton Deployment and Service for an admitted ModelDeployment.

The pod fetches and verifies the model in an init container (``devmlops storage-initializer``) into an emptyDir
that Triton then reads read-only with ``--model-control-mode=none``: the bytes served are the bytes verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.adapters.servingverify import ENV_PLAN
from devmlops.operator.kserve import ANNOTATION_DIGEST, ANNOTATION_POLICY_REVISION, LABEL_MODEL_DEPLOYMENT

__all__ = ["LABEL_MODEL_SERVER", "build_triton"]

LABEL_MODEL_SERVER = "devmlops.io/model-server"
MODEL_DIR = "/mnt/models"
PORTS = (("http", 8000), ("grpc", 8001), ("metrics", 8002))
_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, **timing}


def build_triton(
    model_deployment: Mapping[str, Any], *, plan_json: str, verifier_image: str, policy_revision: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and the Service (without ownerReferences: the handler adopts them)."""
    metadata, spec = model_deployment["metadata"], model_deployment["spec"]
    name, namespace = metadata["name"], metadata["namespace"]
    model, runtime = spec["model"], spec["runtime"]
    selector = {LABEL_MODEL_DEPLOYMENT: name}
    labels = {"app.kubernetes.io/managed-by": "devmlops", LABEL_MODEL_SERVER: "triton", **selector}
    annotations = {ANNOTATION_DIGEST: model["digest"], ANNOTATION_POLICY_REVISION: policy_revision}
    mount = {"name": "model", "mountPath": MODEL_DIR}
    verifier = {
        "name": "devmlops-verify",
        "image": verifier_image,
        "args": ["storage-initializer", model["uri"], MODEL_DIR],
        "env": [{"name": ENV_PLAN, "value": plan_json}],
        "volumeMounts": [mount, {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - a pod mount path
        "securityContext": _RESTRICTED,
    }
    server = {
        "name": "triton",
        "image": runtime["image"],
        "args": ["tritonserver", f"--model-repository={MODEL_DIR}", "--model-control-mode=none"],
        "ports": [{"name": port_name, "containerPort": port} for port_name, port in PORTS],
        "readinessProbe": _probe("/v2/health/ready", periodSeconds=5, failureThreshold=3),
        "livenessProbe": _probe("/v2/health/live", initialDelaySeconds=10, periodSeconds=10),
        "startupProbe": _probe("/v2/health/ready", periodSeconds=10, failureThreshold=60),
        "volumeMounts": [{**mount, "readOnly": True}, {"name": "shm", "mountPath": "/dev/shm"}],  # noqa: S108
        "securityContext": _RESTRICTED,
    }
    if runtime.get("resources"):
        server["resources"] = runtime["resources"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": int(runtime.get("replicas", 1)),
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION_DIGEST: model["digest"]}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [verifier],
                    "containers": [server],
                    "volumes": [
                        {"name": "model", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "shm", "emptyDir": {"medium": "Memory"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "selector": selector,
            "ports": [{"name": port_name, "port": port, "targetPort": port_name} for port_name, port in PORTS],
        },
    }
    return deployment, service
