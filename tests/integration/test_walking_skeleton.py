"""The thin slice through every layer: the API server calls our TLS webhook, which denies an unsigned model;
the operator turns an admitted ModelDeployment into an owned InferenceService and writes status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client, denial_message
from devmlops.adapters.servingverify import VerificationPlan
from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    SignedModel,
    cluster_policy,
    eventually,
    evidence_config_map,
    from_config_map,
    installed_policy,
    model_deployment,
    signed_model,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("skeleton"))


@pytest.fixture
def trusted(admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel) -> Iterator[str]:
    """A policy trusting the model's key for this namespace, and the bundle in a labelled ConfigMap."""
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        namespace, evidence_config_map("evidence", namespace, {"model.sig": model.bundle})
    )
    with installed_policy(admin, stack, cluster_policy(f"skeleton-{namespace}"[:63], namespace, model.key.public_pem)):
        yield namespace


def signed_md(name: str, model: SignedModel, **spec: Any) -> dict[str, Any]:
    return model_deployment(name, model.digest, signature=from_config_map("evidence", "model.sig"), **spec)


def test_the_api_server_returns_the_webhooks_denial_for_an_unsigned_model(
    admin: k8s.ApiClient, trusted: str, model: SignedModel
) -> None:
    namespace = trusted
    api = k8s.CustomObjectsApi(admin)
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_custom_object(
            "devmlops.io", "v1alpha1", namespace, "modeldeployments", model_deployment("unsigned", model.digest)
        )
    assert caught.value.status == 403
    assert denial_message(caught.value) == (
        'admission webhook "modeldeployments.validate.devmlops.io" denied the request: denied by devmlops: '
        f"signature gate (policy skeleton-{namespace}): spec.signature is missing: got no signature bundle, "
        "expected the model's OMS "
        "signature; fix: sign the model with `devmlops sign` (or model_signing) and set spec.signature.inline, "
        "spec.signature.configMapKeyRef or spec.signature.secretKeyRef"
    )
    stored = api.list_namespaced_custom_object("devmlops.io", "v1alpha1", namespace, "modeldeployments")
    assert stored["items"] == []


def test_an_admitted_model_gets_an_owned_inference_service_and_status(
    admin: k8s.ApiClient, trusted: str, model: SignedModel
) -> None:
    namespace = trusted
    api = k8s.CustomObjectsApi(admin)
    created = api.create_namespaced_custom_object(
        "devmlops.io", "v1alpha1", namespace, "modeldeployments", signed_md("fraud", model)
    )

    def child() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = api.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud"
            )
            return found
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    isvc = eventually(child, what="InferenceService creation")
    (owner,) = isvc["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ModelDeployment",
        "fraud",
        created["metadata"]["uid"],
    )
    assert owner["controller"] is True
    assert isvc["metadata"]["annotations"]["devmlops.io/model-digest"] == model.digest
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "devmlops+s3://models/fraud"
    plan = VerificationPlan.from_json(isvc["spec"]["predictor"]["annotations"]["devmlops.io/verification"])
    assert (plan.bundles, plan.digest) == ((model.bundle,), model.digest)

    def status() -> dict[str, Any] | None:
        md = api.get_namespaced_custom_object("devmlops.io", "v1alpha1", namespace, "modeldeployments", "fraud")
        found: dict[str, Any] | None = md.get("status") if md.get("status", {}).get("conditions") else None
        return found

    observed = eventually(status, what="status conditions")
    admitted = next(c for c in observed["conditions"] if c["type"] == "Admitted")
    assert admitted["status"] == "True"
    assert observed["child"] == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "name": "fraud",
    }
    assert observed["observedGeneration"] == 1


def test_each_decision_writes_one_audit_line_with_digest_signer_and_policy_revision(
    admin: k8s.ApiClient, stack: DevmlopsStack, trusted: str, model: SignedModel
) -> None:
    namespace = trusted
    api = k8s.CustomObjectsApi(admin)
    api.create_namespaced_custom_object(
        "devmlops.io", "v1alpha1", namespace, "modeldeployments", signed_md("audited", model)
    )
    assert stack.webhook is not None

    def audit_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in stack.webhook.log_text().splitlines() if line.startswith("{")]
        return [
            line
            for line in lines
            if (line["namespace"], line["name"], line["kind"]) == (namespace, "audited", "ModelDeployment")
        ]

    (line,) = eventually(audit_lines, timeout=10, what="the audit line")
    assert (line["allowed"], line["operation"], line["mode"]) == (True, "CREATE", "enforce")
    assert line["digest"] == model.digest
    assert line["signer"].startswith("key sha256:")
    assert line["policyRevision"] == stack.webhook_status()["policyRevision"]
    assert model.bundle not in json.dumps(line)


def test_a_spec_change_rolls_out_to_the_child(admin: k8s.ApiClient, trusted: str, model: SignedModel) -> None:
    namespace = trusted
    api = k8s.CustomObjectsApi(admin)
    api.create_namespaced_custom_object(
        "devmlops.io", "v1alpha1", namespace, "modeldeployments", signed_md("churn", model)
    )

    def isvc_uri() -> str | None:
        try:
            isvc = api.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "churn"
            )
        except ApiException:
            return None
        uri: str = isvc["spec"]["predictor"]["model"]["storageUri"]
        return uri

    assert eventually(isvc_uri, what="first child") == "devmlops+s3://models/churn"
    api.patch_namespaced_custom_object(
        "devmlops.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        "churn",
        {"spec": {"model": {"uri": "s3://models/churn-v2"}}},
    )
    eventually(lambda: isvc_uri() == "devmlops+s3://models/churn-v2", what="child update")


def test_removing_the_signature_in_an_update_is_denied(admin: k8s.ApiClient, trusted: str, model: SignedModel) -> None:
    namespace = trusted
    api = k8s.CustomObjectsApi(admin)
    api.create_namespaced_custom_object(
        "devmlops.io", "v1alpha1", namespace, "modeldeployments", signed_md("keep", model)
    )
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_custom_object(
            "devmlops.io", "v1alpha1", namespace, "modeldeployments", "keep", {"spec": {"signature": None}}
        )
    assert caught.value.status == 403
    assert "spec.signature is missing" in denial_message(caught.value)


def test_ordinary_users_are_authenticated_with_their_groups_and_held_by_rbac(
    control_plane: ControlPlane,
) -> None:
    for user, groups in (("alice", ["devmlops:ml-engineers"]), ("bob", ["devmlops:approvers"])):
        with api_client(control_plane.kubeconfig(user)) as client:
            review = k8s.AuthenticationV1Api(client).create_self_subject_review({})
            assert review.status.user_info.username == user
            assert set(groups) <= set(review.status.user_info.groups)
            with pytest.raises(ApiException) as caught:
                k8s.CustomObjectsApi(client).list_namespaced_custom_object(
                    "devmlops.io", "v1alpha1", "default", "modeldeployments"
                )
            assert caught.value.status == 403


def test_a_webhook_that_is_down_makes_the_api_server_fail_closed(
    stack: DevmlopsStack, admin: k8s.ApiClient, trusted: str, model: SignedModel
) -> None:
    namespace = trusted
    assert stack.webhook is not None
    stack.webhook.stop()
    try:
        with pytest.raises(ApiException) as caught:
            k8s.CustomObjectsApi(admin).create_namespaced_custom_object(
                "devmlops.io",
                "v1alpha1",
                namespace,
                "modeldeployments",
                signed_md("while-down", model),
            )
        assert caught.value.status == 500
        assert 'failed calling webhook "modeldeployments.mutate.devmlops.io"' in denial_message(caught.value)
    finally:
        stack.restart_webhook()


def test_a_triton_model_gets_an_owned_deployment_and_service_that_verify_before_serving(
    admin: k8s.ApiClient, trusted: str, model: SignedModel
) -> None:
    namespace = trusted
    image = "nvcr.io/nvidia/tritonserver@sha256:" + "1" * 64
    k8s.CustomObjectsApi(admin).create_namespaced_custom_object(
        "devmlops.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        signed_md("resnet", model, runtime={"kind": "triton", "image": image, "replicas": 2}),
    )
    apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)

    def deployment() -> Any:
        try:
            return apps.read_namespaced_deployment("resnet", namespace)
        except ApiException:
            return None

    found = eventually(deployment, what="Triton Deployment")
    assert found.metadata.owner_references[0].kind == "ModelDeployment"
    pod = found.spec.template.spec
    assert pod.init_containers[0].args[0] == "storage-initializer"
    plan = VerificationPlan.from_json(pod.init_containers[0].env[0].value)
    assert plan.digest == model.digest
    assert pod.containers[0].image == image
    assert "--model-control-mode=none" in pod.containers[0].args

    def service() -> Any:  # created right after the Deployment
        try:
            return core.read_namespaced_service("resnet", namespace)
        except ApiException:
            return None

    found_service = eventually(service, what="Triton Service")
    assert sorted(p.port for p in found_service.spec.ports) == [8000, 8001, 8002]
    assert found_service.metadata.owner_references[0].name == "resnet"
