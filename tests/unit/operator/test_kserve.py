from __future__ import annotations

from typing import Any

from devmlops.core.manifests import ModelDeployment, parse_model_deployment
from devmlops.core.render import (
    ANNOTATION_AUTOSCALER_CLASS,
    ANNOTATION_DEPLOYMENT_MODE,
    ANNOTATION_DIGEST,
    build_inference_service,
)

DIGEST = "sha256:" + "ab" * 32


def md(**spec: Any) -> ModelDeployment:
    base: dict[str, Any] = {
        "model": {"name": "fraud", "uri": "s3://models/fraud", "format": "sklearn", "digest": DIGEST},
        "runtime": {"kind": "kserve", "replicas": 2},
    }
    base.update(spec)
    return parse_model_deployment({"metadata": {"name": "fraud", "namespace": "team-a"}, "spec": base})


def test_the_inference_service_serves_the_model_uri_and_format_with_the_digest_stamped() -> None:
    child = build_inference_service(md())
    assert child["apiVersion"] == "serving.kserve.io/v1beta1"
    assert child["metadata"]["namespace"] == "team-a"
    assert child["metadata"]["annotations"][ANNOTATION_DIGEST] == DIGEST
    # Stated, not left to the cluster's default (KServe ships Knative): "Standard" in KServe v0.16's words.
    assert child["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_MODE] == "Standard"
    # No HPA: KServe sets the predictor Deployment's replicas to minReplicas, so the operator's scale to zero (of a
    # revoked model) stops the model server; under KServe's default HPA (minimum 1) it kept serving.
    assert child["metadata"]["annotations"][ANNOTATION_AUTOSCALER_CLASS] == "none"
    assert child["spec"]["predictor"] == {
        "model": {"storageUri": "devmlops+s3://models/fraud", "modelFormat": {"name": "sklearn"}},
        "minReplicas": 2,
        # A version change replaces the predictor's Pods: a rolling update kept the old version serving, undecided
        # (attacks/test_rolling_update.py).
        "deploymentStrategy": {"type": "Recreate"},
    }


def test_a_canary_rollout_sets_the_traffic_percent() -> None:
    child = build_inference_service(md(rollout={"strategy": "canary", "canary": {"trafficPercent": 10}}))
    assert child["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_serving_runtime_and_resources_pass_through() -> None:
    resources = {"limits": {"cpu": "1"}}
    runtime = {"kind": "kserve", "servingRuntime": "kserve-sklearnserver", "resources": resources}
    model = build_inference_service(md(runtime=runtime))["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-sklearnserver"
    assert model["resources"] == resources


def test_a_predictor_pod_names_its_inference_service_and_other_pods_none() -> None:
    from devmlops.operator.kserveevents import inference_service_of_pod

    assert inference_service_of_pod("iris-predictor-7895f768dc-ll4r9") == "iris"
    assert inference_service_of_pod("iris-tampered-predictor-6c9d8b7f5-abcde") == "iris-tampered"
    assert inference_service_of_pod("iris-predictor-predictor-6c9d8b7f5-abcde") == "iris-predictor"
    assert inference_service_of_pod("web-7895f768dc-ll4r9") == ""
    assert inference_service_of_pod("predictor") == ""
