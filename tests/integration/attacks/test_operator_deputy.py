"""The operator as a confused deputy: what mallory makes it do, or leave undone, with rights she lacks (operator
deputy review).

The operator writes a Triton model's children in order (the Deployment, then its Service) and its status last, and
scaled a revoked model's server to zero by the child its status names. Whatever made the Service unwritable left a
running Deployment that no status named: a ModelDeployment name that is a DNS subdomain but no DNS label
("fraud.v2", admitted before this review), or a Service quota that mallory fills with a Service of her own. Revoked,
the model was decided Degraded, "scaled to zero (no child yet)", and served on at full scale. And the operator looked
only under the names of the runtime kind the spec names now: switched from Triton to KServe, a model kept its Triton
Deployment serving, decided by nobody. Each test here failed before its fix. Docstrings say what the attack was; the
assertions, what holds.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    TRITON,
    ModelPods,
    Served,
    _get_isvc,
    admitted,
    as_dict,
    denied,
    owned_by,
    serve,
    wait_until_allowed,
)
from tests.integration.attacks.test_scale import revoke
from tests.integration.support import GROUP, VERSION, SignedModel, eventually, signed_by_evidence

MODEL_LABEL = "devmlops.io/model-deployment"


def test_a_model_deployment_whose_name_no_service_may_carry_is_refused(
    mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, trusted: dict[str, Any]
) -> None:
    """Mallory's signed Triton model "fraud.v2" (a valid ModelDeployment and Deployment name, no valid Service name):
    before, it was admitted, the operator wrote its Deployment and never its Service nor its status, and revoked (key
    replaced, scaleToZero) it served on at full scale, "scaled to zero (no child yet)" (this test asserted that and
    failed). The name is refused now, naming the field; the operator's side is the quota test below."""
    doc = signed_by_evidence("fraud.v2", attack_model, runtime={"kind": "triton", "image": TRITON})
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    custom = k8s.CustomObjectsApi(mallory)
    md = (GROUP, VERSION, enforced_namespace, "modeldeployments")
    message = denied(custom.create_namespaced_custom_object, *md, doc)
    assert "metadata.name" in message
    assert "no DNS label" in message
    doc["metadata"]["name"] = "fraud-v2"
    wait_until_allowed(
        lambda: custom.create_namespaced_custom_object(*md, doc, dry_run="All"),
        what="the same model as fraud-v2",
    )


def test_a_model_whose_service_is_over_the_namespaces_quota_is_still_scaled_to_zero_when_revoked(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    rogue_model: SignedModel,
    trusted: dict[str, Any],
) -> None:
    """The cluster admin bounds the namespace's Services with a ResourceQuota; mallory fills it with a Service of her
    own (a name that is no model's address: admitted). The team's Triton model "fraud" gets its Deployment, never its
    Service (quota exceeded), so no reconcile gets as far as its status. Its key revoked (scaleToZero): its Pods must
    go."""
    namespace, name = enforced_namespace, "fraud"
    core_admin = k8s.CoreV1Api(admin)
    quota: Any = {"metadata": {"name": "services"}, "spec": {"hard": {"services": "1"}}}
    core_admin.create_namespaced_resource_quota(namespace, quota)

    def used() -> dict[str, str] | None:
        return core_admin.read_namespaced_resource_quota("services", namespace).status.used

    # The stack runs no quota controller: the cluster admin writes its first count (none used), and the API server's
    # ResourceQuota admission counts each new Service from there.
    counted: Any = {"status": {"hard": {"services": "1"}, "used": {"services": "0"}}}
    core_admin.patch_namespaced_resource_quota_status("services", namespace, counted)
    hers: Any = {
        "metadata": {"name": "mallory-web"},
        "spec": {"selector": {"app": "mallory-web"}, "ports": [{"name": "http", "port": 80}]},
    }
    admitted(k8s.CoreV1Api(mallory).create_namespaced_service, namespace, hers)
    eventually(lambda: (used() or {}).get("services") == "1", timeout=30, what="mallory's Service in the quota")
    served = serve(admin, namespace, attack_model, trusted, name=name, runtime={"kind": "triton", "image": TRITON})

    def model_pods() -> list[str]:
        pods = k8s.CoreV1Api(admin).list_namespaced_pod(namespace, label_selector=f"{MODEL_LABEL}={name}").items
        return [str(as_dict(p)["metadata"]["name"]) for p in pods]

    eventually(model_pods, timeout=30, what="the model server's Pods")
    assert name not in [s.metadata.name for s in core_admin.list_namespaced_service(namespace).items]
    revoke(admin, stack, served, rogue_model, onViolation="scaleToZero")
    deadline = time.monotonic() + 60
    while model_pods() and time.monotonic() < deadline:
        time.sleep(0.5)
    md = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
    status = md.get("status") or {}
    said = [c.get("message") for c in status.get("conditions") or [] if c.get("type") == "ServingReady"]
    left = model_pods()
    assert not left, (
        f"the revoked model's Pods {left} still run 60 s after revocation (phase {status.get('phase')!r}, "
        f"child {status.get('child')!r}, ServingReady {said})"
    )


def test_a_switch_of_runtime_kind_leaves_no_model_server_of_the_old_kind_running(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    served_triton: Served,
    triton_pods: ModelPods,
    rogue_model: SignedModel,
) -> None:
    """Mallory switches the served Triton model "fraud" to KServe (spec.runtime.kind, the same signed model: admitted).
    The operator renders an InferenceService "fraud" and observed, deleted or scaled only the children of the kind
    the spec names now: the Triton Deployment "fraud", still controlled by the ModelDeployment, served on, decided by
    nobody. The cluster admin revokes the key (scaleToZero): the Triton Deployment's Pods must go too."""
    namespace = served_triton.namespace
    switch = {"spec": {"runtime": {"kind": "kserve", "image": None}}}
    admitted(
        k8s.CustomObjectsApi(mallory).patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "modeldeployments",
        "fraud",
        switch,
    )
    eventually(lambda: _get_isvc(admin, namespace, "fraud"), timeout=30, what="the operator's InferenceService fraud")
    revoke(admin, stack, served_triton, rogue_model, onViolation="scaleToZero")

    def pods() -> list[str]:
        items = [as_dict(p) for p in k8s.CoreV1Api(admin).list_namespaced_pod(namespace).items]
        return [str(p["metadata"]["name"]) for p in owned_by(items, triton_pods.replica_set)]

    deadline = time.monotonic() + 60
    while pods() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = pods()
    assert not left, f"the Triton model server's Pods {left} still run 60 s after the key was revoked"
