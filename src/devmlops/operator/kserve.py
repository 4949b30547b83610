"""Build the KServe InferenceService that serves an admitted ModelDeployment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ANNOTATION_DIGEST", "LABEL_MODEL_DEPLOYMENT", "build_inference_service"]

ANNOTATION_DIGEST = "devmlops.io/model-digest"
LABEL_MODEL_DEPLOYMENT = "devmlops.io/model-deployment"


def build_inference_service(model_deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The child object, without ownerReferences (the handler adopts it)."""
    metadata = model_deployment["metadata"]
    spec = model_deployment["spec"]
    model, runtime = spec["model"], spec["runtime"]
    predictor_model: dict[str, Any] = {"storageUri": model["uri"]}
    if model.get("format"):
        predictor_model["modelFormat"] = {"name": model["format"]}
    if runtime.get("servingRuntime"):
        predictor_model["runtime"] = runtime["servingRuntime"]
    if runtime.get("resources"):
        predictor_model["resources"] = runtime["resources"]
    predictor: dict[str, Any] = {"model": predictor_model, "minReplicas": int(runtime.get("replicas", 1))}
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
            "annotations": {ANNOTATION_DIGEST: model["digest"]},
        },
        "spec": {"predictor": predictor},
    }
