"""Status that tells the truth: verified signer and digest, ServingReady mirrored from the child (KServe's refusal
to render it, then a Ready condition the test writes, as no kubelet runs the predictor), and revocation: a policy
change degrades an admitted model, emits an Event and, where the policy says so, scales its server to zero."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    eventually,
    md_status,
    signed_by_evidence,
    signed_model,
    trusting,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("status"), "fraud")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("other"), "fraud")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


@pytest.fixture
def admitted(admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel) -> Iterator[str]:
    with trusting(admin, stack, namespace, model, policy=f"status-{namespace}", onViolation="scaleToZero") as policy:
        doc = signed_by_evidence("fraud", model)
        k8s.CustomObjectsApi(admin).create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", doc)
        eventually(lambda: md_status(admin, namespace).get("child"), what="child")
        yield policy["metadata"]["name"]


def test_status_names_the_verified_signer_and_digest(admin: k8s.ApiClient, admitted: str, model: SignedModel) -> None:
    namespace = admitted.removeprefix("status-")
    status = md_status(admin, namespace)
    assert status["verifiedDigest"] == model.digest
    assert status["signer"].startswith("key sha256:")
    assert condition(status, "SignatureVerified")["status"] == "True"
    assert condition(status, "Degraded")["status"] == "False"

    def admitted_events() -> list[Any]:
        events = k8s.CoreV1Api(admin).list_namespaced_event(namespace, field_selector="involvedObject.name=fraud")
        return [e for e in events.items if (e.reason, e.type) == ("Admitted", "Normal")]

    (event,) = eventually(admitted_events, timeout=10, what="the Admitted Event from the create handler")
    assert model.digest in event.message


def test_the_operator_keeps_its_bookkeeping_in_status_and_never_writes_the_model_deployment(
    admin: k8s.ApiClient, admitted: str
) -> None:
    """A write to the object itself is an UPDATE the webhook decides in full: once a policy stops admitting the
    model, an operator that kept kopf's annotations there was refused on every handler run."""
    namespace = admitted.removeprefix("status-")

    def handled() -> dict[str, Any] | None:
        md = cast(
            dict[str, Any],
            k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
                GROUP, VERSION, namespace, "modeldeployments", "fraud"
            ),
        )
        return md if "last-handled-configuration" in (md.get("status") or {}).get("kopf", {}) else None

    md = eventually(handled, timeout=10, what="kopf's bookkeeping in status.kopf")
    assert not [key for key in md["metadata"].get("annotations") or {} if key.startswith("kopf.")]
    kopf_writes = {
        entry.get("subresource", "") for entry in md["metadata"]["managedFields"] if entry["manager"] == "kopf"
    }
    assert kopf_writes == {"status"}


def test_serving_ready_follows_the_inference_services_ready_condition(admin: k8s.ApiClient, admitted: str) -> None:
    """In this long namespace KServe cannot render the InferenceService (its predictor host name is over 63
    characters): ServingReady says so with KServe's reason. Then the test writes the Ready condition that KServe
    would write once the predictor runs (there is no node here), and ServingReady follows it."""
    namespace = admitted.removeprefix("status-")
    refused = eventually(
        lambda: condition(md_status(admin, namespace), "ServingReady").get("reason") == "InternalError",
        what="ServingReady=False with KServe's InternalError",
    )
    assert refused
    assert condition(md_status(admin, namespace), "ServingReady")["status"] == "False"
    k8s.CustomObjectsApi(admin).patch_namespaced_custom_object_status(
        "serving.kserve.io",
        "v1beta1",
        namespace,
        "inferenceservices",
        "fraud",
        {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "PredictorReady"}]}},
    )
    eventually(
        lambda: condition(md_status(admin, namespace), "ServingReady").get("status") == "True", what="ServingReady=True"
    )


def test_revoking_the_key_degrades_the_model_emits_an_event_and_scales_it_to_zero(
    admin: k8s.ApiClient, stack: DevmlopsStack, admitted: str, other: SignedModel
) -> None:
    namespace = admitted.removeprefix("status-")
    api = k8s.CustomObjectsApi(admin)
    policy = cast(dict[str, Any], api.get_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", admitted))
    trusted = policy["spec"]["authorities"]

    def isvc() -> dict[str, Any]:
        return cast(
            dict[str, Any],
            api.get_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud"),
        )

    serving_replicas = isvc()["spec"]["predictor"]["minReplicas"]
    assert serving_replicas > 0
    policy["spec"]["authorities"] = [{"name": "rotated-key", "key": {"publicKey": other.key.public_pem}}]
    api.replace_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", admitted, policy)
    degraded = eventually(
        lambda: condition(md_status(admin, namespace), "Degraded").get("status") == "True", what="Degraded=True"
    )
    assert degraded
    status = md_status(admin, namespace)
    assert status["phase"] == "Degraded"
    assert "got 0 verified authorities" in condition(status, "Degraded")["message"]
    assert condition(status, "SignatureVerified")["status"] == "False"
    assert isvc()["spec"]["predictor"]["minReplicas"] == 0
    events = k8s.CoreV1Api(admin).list_namespaced_event(namespace, field_selector="involvedObject.name=fraud").items
    assert any(e.reason == "Degraded" and e.type == "Warning" for e in events)
    # Trusting the key again brings the model back, and its server with it (not left at zero).
    policy = cast(dict[str, Any], api.get_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", admitted))
    policy["spec"]["authorities"] = trusted
    api.replace_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", admitted, policy)
    eventually(lambda: md_status(admin, namespace)["phase"] == "Admitted", what="Admitted again")
    eventually(lambda: isvc()["spec"]["predictor"]["minReplicas"] == serving_replicas, what="replicas restored")


def test_the_operator_exposes_its_metrics(admin: k8s.ApiClient, stack: DevmlopsStack, admitted: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.operator_metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'devmlops_reconcile_total{kind="ModelDeployment",result="allowed"}' in text
    assert 'devmlops_model_deployments{phase="Admitted"}' in text
