"""Nobody reaches a model server around the gates: the bypasses a user would try, through the real API server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client, denial_message
from devmlops.harness.controlplane import OPERATOR_USER, ControlPlane
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    evidence_config_map,
    from_config_map,
    installed_policy,
    model_deployment,
    signed_model,
)

TRITON = "nvcr.io/nvidia/tritonserver@sha256:" + "2" * 64


@pytest.fixture(autouse=True)
def _webhook_running(stack: DevmlopsStack) -> None:
    """Every test here goes through the registered webhook."""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("bypass"), "fraud")


@pytest.fixture
def served(admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel) -> Iterator[dict[str, Any]]:
    """An admitted ModelDeployment whose InferenceService the operator created."""
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        namespace, evidence_config_map("evidence", namespace, {"model.sig": model.bundle})
    )
    spec = {
        "compliance": {
            "approvers": {"groups": ["devmlops:approvers"]},
            "tiers": {"high": {"requireApproval": True, "requiredEvidence": []}},
        }
    }
    with installed_policy(
        admin, stack, cluster_policy(f"bypass-{namespace}"[:63], namespace, model.key.public_pem, **spec)
    ):
        api = k8s.CustomObjectsApi(admin)
        doc = model_deployment("fraud", model.digest, signature=from_config_map("evidence", "model.sig"))
        doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
        md = cast(
            dict[str, Any], api.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", doc)
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                api.get_namespaced_custom_object(
                    "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud"
                )
                break
            except ApiException:
                time.sleep(0.2)
        yield md


def isvc(name: str, uri: str, owner: dict[str, Any] | None = None, digest: str = "") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "annotations": {"devmlops.io/model-digest": digest} if digest else {}}
    if owner:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelDeployment",
                "controller": True,
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}},
    }


def refused(create: Any, *args: Any) -> str:
    with pytest.raises(ApiException) as caught:
        create(*args)
    assert caught.value.status == 403, denial_message(caught.value)
    return denial_message(caught.value)


def test_a_hand_written_inference_service_is_denied_and_pointed_to_modeldeployment(
    admin: k8s.ApiClient, namespace: str
) -> None:
    api = k8s.CustomObjectsApi(admin)
    message = refused(
        api.create_namespaced_custom_object,
        "serving.kserve.io",
        "v1beta1",
        namespace,
        "inferenceservices",
        isvc("sneaky", "s3://models/anything"),
    )
    assert (
        f"bypass gate: InferenceService {namespace}/sneaky is not owned by anything; expected the child of an "
        "admitted ModelDeployment; fix: create a ModelDeployment" in message
    )


def test_a_copied_owner_reference_is_denied_to_anyone_but_the_operator(
    admin: k8s.ApiClient, namespace: str, served: dict[str, Any], model: SignedModel
) -> None:
    api = k8s.CustomObjectsApi(admin)
    copy = isvc("fraud-copy", "devmlops+s3://models/poisoned", owner=served, digest=model.digest)
    message = refused(
        api.create_namespaced_custom_object, "serving.kserve.io", "v1beta1", namespace, "inferenceservices", copy
    )
    assert f"only the devmlops operator ({OPERATOR_USER}) may write it" in message
    assert "the request came from 'admin'" in message


def test_a_copied_owner_reference_with_a_forged_uid_is_denied(
    admin: k8s.ApiClient, namespace: str, served: dict[str, Any], model: SignedModel
) -> None:
    forged = {**served, "metadata": {**served["metadata"], "uid": "00000000-0000-0000-0000-000000000000"}}
    copy = isvc("fraud-forged", "devmlops+s3://models/fraud", owner=forged, digest=model.digest)
    message = refused(
        k8s.CustomObjectsApi(admin).create_namespaced_custom_object,
        "serving.kserve.io",
        "v1beta1",
        namespace,
        "inferenceservices",
        copy,
    )
    assert "is controlled by ModelDeployment fraud (ModelDeployment fraud with uid 00000000" in message
    assert "expected the child of an admitted ModelDeployment" in message


def test_the_operators_child_cannot_be_repointed_but_can_be_scaled_down_and_deleted(
    admin: k8s.ApiClient, namespace: str, served: dict[str, Any]
) -> None:
    api = k8s.CustomObjectsApi(admin)
    args = ("serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud")
    message = refused(
        api.patch_namespaced_custom_object,
        *args,
        {"spec": {"predictor": {"model": {"storageUri": "devmlops+s3://models/other"}}}},
    )
    assert "only the devmlops operator" in message
    api.patch_namespaced_custom_object(*args, {"spec": {"predictor": {"minReplicas": 0}}})
    api.delete_namespaced_custom_object(*args)


def deployment(name: str, image: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    pod_labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "server", "image": image}]},
            },
        },
    }


def test_a_model_server_deployment_without_the_label_is_still_caught_by_its_image(
    admin: k8s.ApiClient, namespace: str
) -> None:
    apps = k8s.AppsV1Api(admin)
    message = refused(apps.create_namespaced_deployment, namespace, deployment("triton-by-hand", TRITON))
    assert f"Deployment {namespace}/triton-by-hand is not owned by anything" in message
    labelled = deployment("custom-server", "registry.example.com/my-server:1", {"devmlops.io/model-server": "custom"})
    assert "is not owned by anything" in refused(apps.create_namespaced_deployment, namespace, labelled)
    apps.create_namespaced_deployment(namespace, deployment("web", "nginx:1.27"))  # not a model server: untouched


def test_the_operators_own_child_of_a_high_risk_model_without_approval_is_denied(
    admin: k8s.ApiClient, control_plane: ControlPlane, namespace: str, served: dict[str, Any], stack: DevmlopsStack
) -> None:
    """Even written by the operator's identity and equal to the rendering, a child is admitted only while its
    ModelDeployment may be served: here a high-risk tier that waits for a ModelApproval."""
    api = k8s.CustomObjectsApi(admin)
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modeldeployments",
        "fraud",
        {"metadata": {"labels": {"devmlops.io/eu-ai-act-risk": "high"}}},
    )
    deadline = time.monotonic() + 30
    message = ""
    with api_client(control_plane.kubeconfig(OPERATOR_USER)) as operator:
        as_operator = k8s.CustomObjectsApi(operator)
        while time.monotonic() < deadline and "ModelApproval" not in message:  # the webhook's cache follows the label
            # The rendered child itself, serving again (the operator scaled it to zero for the missing approval).
            stored = api.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud"
            )
            if stored["spec"]["predictor"].get("minReplicas") != 0:
                # Not scaled to zero yet (a loaded machine): the same spec again is the operator keeping its child
                # as it is, which is not what this test asks.
                message = f"the operator has not scaled the child to zero yet: {stored['spec']['predictor']}"
                time.sleep(0.2)
                continue
            serving = {
                **stored,
                "spec": {**stored["spec"], "predictor": {**stored["spec"]["predictor"], "minReplicas": 1}},
            }
            try:
                as_operator.replace_namespaced_custom_object(
                    "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud", serving, dry_run="All"
                )
                message = "admitted"
            except ApiException as exc:
                message = denial_message(exc)
            time.sleep(0.2)
    assert stack.operator is not None
    operator_said = [line for line in stack.operator.log_text().splitlines()[-400:] if "aiohttp.access" not in line]
    assert "may not be served now" in message, "\n".join([message, "operator:", *operator_said[-40:]])
    assert "requires a ModelApproval" in message


def test_a_second_child_under_another_name_is_denied_even_from_the_operator(
    admin: k8s.ApiClient, control_plane: ControlPlane, namespace: str, served: dict[str, Any]
) -> None:
    """A child is compared with the rendered child of its own kind and name: the operator's identity copying an
    admitted model's InferenceService under another name gets no second model server (before, the copy matched the
    rendering by kind alone and was admitted)."""
    api = k8s.CustomObjectsApi(admin)
    stored = api.get_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud")
    metadata = {k: stored["metadata"][k] for k in ("labels", "annotations", "ownerReferences")}
    named = {**metadata, "name": "fraud-copy"}
    copy = {"apiVersion": stored["apiVersion"], "kind": "InferenceService", "metadata": named, "spec": stored["spec"]}
    with api_client(control_plane.kubeconfig(OPERATOR_USER)) as operator:
        create = k8s.CustomObjectsApi(operator).create_namespaced_custom_object
        message = refused(
            lambda: create("serving.kserve.io", "v1beta1", namespace, "inferenceservices", copy, dry_run="All")
        )
    assert "renders no InferenceService named fraud-copy" in message
