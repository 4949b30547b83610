"""The general attack review (attacker: mallory, a namespace editor, docs/threat-model.md): obvious variants of
attacks that other tests make one way, made the other ways the API server offers.

None of these found a hole: each passed on the code it was written against (they are regression tests, not proofs
of a fix). A collection's deletion with ``propagationPolicy: Orphan`` is refused item by item like a single delete;
a model server's Pod keeps its controller reference; and ReplicationControllers, which the API server never sends
to the webhook, get no Pod from their controller that copies a model server's or wears a model's Service selector
(the harness now runs the replicationcontroller controller, so the claim of docs/threat-model.md is exercised).
The attack Role now grants ``deletecollection`` and ReplicationControllers, as the built-in ``edit`` role does
(docs/threat-model.md counts both among the attacker's rights; the Role had neither).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from tests.integration.attacks.conftest import (
    ROGUE,
    ModelPods,
    Served,
    as_dict,
    denied,
    pod_spec,
)
from tests.integration.attacks.test_unenforced_routing_labels import (  # the fixture, and what it serves
    _model_service_selector,
    served_plain,  # noqa: F401
)
from tests.integration.support import GROUP, VERSION, eventually


def test_a_delete_collection_does_not_orphan_a_model_server(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, triton_pods: ModelPods, served_triton: Served
) -> None:
    """Property 1c refuses a DELETE with ``propagationPolicy: Orphan`` (or ``orphanDependents``) of a ModelDeployment
    or a model server's workload. ``deletecollection`` is the same deletion, item by item, with one DeleteOptions:
    mallory sends it for every ModelDeployment, Deployment and ReplicaSet of her namespace at once."""
    namespace = served_triton.namespace
    apps, custom = k8s.AppsV1Api(mallory), k8s.CustomObjectsApi(mallory)
    message = denied(
        custom.delete_collection_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "modeldeployments",
        propagation_policy="Orphan",
    )
    assert "propagationPolicy Orphan" in message
    denied(apps.delete_collection_namespaced_deployment, namespace, propagation_policy="Orphan")
    denied(apps.delete_collection_namespaced_replica_set, namespace, orphan_dependents=True)
    stored = as_dict(
        k8s.AppsV1Api(admin).read_namespaced_replica_set(triton_pods.replica_set["metadata"]["name"], namespace)
    )
    assert stored["metadata"].get("deletionTimestamp") is None, "the model server's ReplicaSet was deleted"


def test_a_model_servers_pod_cannot_be_released_by_its_controller_flag(
    mallory: k8s.ApiClient, triton_pods: ModelPods
) -> None:
    """Removing a Pod's ownerReferences or relabelling it is refused (property 1c). Keeping the reference but
    turning its ``controller`` flag off is the third way to leave the Pod controlled by nothing."""
    pod = triton_pods.pods[0]
    denied(
        k8s.CoreV1Api(mallory).patch_namespaced_pod,
        pod["metadata"]["name"],
        pod["metadata"]["namespace"],
        [{"op": "replace", "path": "/metadata/ownerReferences/0/controller", "value": False}],
    )


def _replication_controller(name: str, template: dict[str, Any]) -> dict[str, Any]:
    labels = dict(template["metadata"].get("labels") or {})
    return {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": labels, "template": template},
    }


def _pods_of(admin: k8s.ApiClient, namespace: str, owner: Any) -> list[str]:
    uid = owner.metadata.uid
    return [
        p.metadata.name
        for p in k8s.CoreV1Api(admin).list_namespaced_pod(namespace).items
        if any(r.uid == uid for r in p.metadata.owner_references or [])
    ]


def _refusal(admin: k8s.ApiClient, namespace: str) -> str | None:
    """The message of the replication controller's first Pod creation that devmlops refused, if any yet."""
    events = k8s.CoreV1Api(admin).list_namespaced_event(namespace, field_selector="involvedObject.name=rc").items
    return next((e.message for e in events if e.reason == "FailedCreate" and "devmlops" in (e.message or "")), None)


def test_a_replication_controller_copying_the_model_servers_pod_makes_no_pod(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, triton_pods: ModelPods
) -> None:
    """ReplicationControllers are never sent to the webhook; the Pods their controller makes are. Mallory copies the
    model server's Pod (labels, plan annotation, spec; her own image in it) into a ReplicationController's template:
    its controller (a trusted identity) would make the Pod for her."""
    model_pod = triton_pods.pods[0]
    namespace = model_pod["metadata"]["namespace"]
    spec = {k: v for k, v in model_pod["spec"].items() if k not in ("nodeName",)}
    spec["containers"] = [
        {**c, "image": ROGUE} if c["name"] == spec["containers"][0]["name"] else c for c in spec["containers"]
    ]
    labels = {**model_pod["metadata"]["labels"], "pod-template-hash": "mallory"}
    template = {
        "metadata": {"labels": labels, "annotations": model_pod["metadata"].get("annotations") or {}},
        "spec": spec,
    }
    rc = k8s.CoreV1Api(mallory).create_namespaced_replication_controller(
        namespace, _replication_controller("rc", template)
    )
    message = eventually(
        lambda: _refusal(admin, namespace), timeout=30, what="the replication controller's Pod refused"
    )
    assert "bypass" in message, message
    assert _pods_of(admin, namespace, rc) == [], "the replication controller made a Pod with mallory's image"


def test_outside_enforcement_a_replication_controller_wearing_a_models_selector_makes_no_pod(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    served_plain: Served,  # noqa: F811 (the fixture imported above)
) -> None:
    """Outside enforcement only Pods that wear a model's routing labels reach the webhook. Mallory's
    ReplicationController (not sent) has a template that wears the model Service's selector and runs her image:
    the Pod its controller makes would be selected by the model's Service."""
    namespace = served_plain.namespace
    selector = _model_service_selector(admin, namespace)
    template = {"metadata": {"labels": selector}, "spec": pod_spec(ROGUE)}
    rc = k8s.CoreV1Api(mallory).create_namespaced_replication_controller(
        namespace, _replication_controller("rc", template)
    )
    message = eventually(
        lambda: _refusal(admin, namespace), timeout=30, what="the replication controller's Pod refused"
    )
    assert "devmlops.io/model-deployment" in message, message
    assert _pods_of(admin, namespace, rc) == [], "the replication controller made a Pod the model's Service selects"


def test_server_side_apply_relabels_no_model_server(mallory: k8s.ApiClient, triton_pods: ModelPods) -> None:
    """Relabelling a model server's Pod (its ReplicaSet would release it) and annotating its Deployment are refused
    as updates and patches; ``kubectl apply --server-side --force-conflicts`` with a field manager of her own is the
    same change by another route."""
    pod = triton_pods.pods[0]
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    applied = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"pod-template-hash": "x"}}}
    apply = {"field_manager": "mallory", "force": True, "_content_type": "application/apply-patch+yaml"}
    denied(k8s.CoreV1Api(mallory).patch_namespaced_pod, name, namespace, applied, **apply)
    deployment = triton_pods.replica_set["metadata"]["ownerReferences"][0]["name"]
    annotated = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment, "annotations": {"mallory": "was here"}},
    }
    denied(k8s.AppsV1Api(mallory).patch_namespaced_deployment, deployment, namespace, annotated, **apply)
