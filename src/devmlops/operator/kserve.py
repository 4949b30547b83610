"""Build the KServe InferenceService that serves an admitted ModelDeployment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.adapters.servingverify import PREFIX

__all__ = [
    "ANNOTATION_DIGEST",
    "ANNOTATION_POLICY_REVISION",
    "ANNOTATION_VERIFICATION",
    "LABEL_MODEL_DEPLOYMENT",
    "build_inference_service",
]

ANNOTATION_DIGEST = "devmlops.io/model-digest"
ANNOTATION_POLICY_REVISION = "devmlops.io/policy-revision"
ANNOTATION_VERIFICATION = "devmlops.io/verification"
LABEL_MODEL_DEPLOYMENT = "devmlops.io/model-deployment"


def build_inference_service(
    model_deployment: Mapping[str, Any], *, plan_json: str = "", policy_revision: str = ""
) -> dict[str, Any]:
    """The child object, without ownerReferences (the handler adopts it).

    The storage URI gets the ``devmlops+`` prefix, which KServe routes to the devmlops ClusterStorageContainer
    (config/kserve/): it downloads the model and verifies signature and bytes before the predictor starts. The
    plan reaches that container through a predictor annotation and the downward API.
    """
    metadata = model_deployment["metadata"]
    spec = model_deployment["spec"]
    model, runtime = spec["model"], spec["runtime"]
    predictor_model: dict[str, Any] = {"storageUri": PREFIX + model["uri"]}
    if model.get("format"):
        predictor_model["modelFormat"] = {"name": model["format"]}
    if runtime.get("servingRuntime"):
        predictor_model["runtime"] = runtime["servingRuntime"]
    if runtime.get("resources"):
        predictor_model["resources"] = runtime["resources"]
    predictor: dict[str, Any] = {"model": predictor_model, "minReplicas": int(runtime.get("replicas", 1))}
    if plan_json:
        predictor["annotations"] = {ANNOTATION_VERIFICATION: plan_json}
    rollout = spec.get("rollout") or {}
    if rollout.get("strategy") == "canary":
        predictor["canaryTrafficPercent"] = int(rollout["canary"]["trafficPercent"])
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "devmlops", LABEL_MODEL_DEPLOYMENT: metadata["name"]},
            "annotations": {ANNOTATION_DIGEST: model["digest"], ANNOTATION_POLICY_REVISION: policy_revision},
        },
        "spec": {"predictor": predictor},
    }
