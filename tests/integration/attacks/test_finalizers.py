"""Property 1c, revocation reaches every model server: a finalizer is no way to keep one running.

A controller does nothing for an object that is being deleted: the ReplicaSet controller no longer scales a
terminating ReplicaSet, the Deployment controller only writes a terminating Deployment's status, and the operator
never re-checks a ModelDeployment that is being deleted. An object that carries a finalizer nobody removes stays
terminating for ever. Mallory adds a finalizer of her own to a model server's ReplicaSet, Deployment or to the
ModelDeployment, and deletes it (every deletion is allowed): before the fix the model server ran on after its key was
revoked (both attacks succeeded, these tests failed). Docstrings say what the attack was; the assertions, what holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ModelPods,
    Served,
    as_dict,
    denied,
    owned_by,
    refused_by_devmlops,
)
from tests.integration.attacks.test_scale import revoke
from tests.integration.support import GROUP, VERSION, SignedModel, eventually, signed_by_evidence

KEEP = ["mallory.example.com/keep"]
FINALIZE = {"metadata": {"finalizers": KEEP}}


@contextmanager
def finalizers_removed_afterwards(read: Callable[[], Any], remove: Callable[[], Any]) -> Iterator[None]:
    """Whatever the test finds, the cluster admin takes mallory's finalizer off afterwards, if it was admitted."""
    try:
        yield
    finally:
        try:
            if KEEP[0] in ((read().get("metadata") or {}).get("finalizers") or []):
                remove()
        except ApiException as exc:
            if exc.status != 404:
                raise


def _model_pods(admin: k8s.ApiClient, namespace: str, replica_set: dict[str, Any]) -> list[dict[str, Any]]:
    return owned_by([as_dict(p) for p in k8s.CoreV1Api(admin).list_namespaced_pod(namespace).items], replica_set)


def test_a_finalizer_does_not_keep_a_revoked_model_servers_pods_running(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    served_triton: Served,
    triton_pods: ModelPods,
    rogue_model: SignedModel,
) -> None:
    """Mallory puts a finalizer on the Triton Deployment's ReplicaSet (once admitted as "metadata only") and deletes
    the ReplicaSet: it stays terminating, and the ReplicaSet controller no longer scales a terminating ReplicaSet.
    The cluster admin then revokes the model's key: the operator scales the Deployment to zero, the Deployment
    controller writes zero into the ReplicaSet, and its Pods must go. The Deployment itself may take no finalizer
    from her either (its controller only writes a terminating Deployment's status)."""
    namespace = served_triton.namespace
    apps_admin, apps = k8s.AppsV1Api(admin), k8s.AppsV1Api(mallory)
    rs_name = triton_pods.replica_set["metadata"]["name"]
    unfinalize = {"metadata": {"finalizers": None}}
    with finalizers_removed_afterwards(
        lambda: as_dict(apps_admin.read_namespaced_replica_set(rs_name, namespace)),
        lambda: apps_admin.patch_namespaced_replica_set(rs_name, namespace, unfinalize),
    ):
        refused = refused_by_devmlops(apps.patch_namespaced_replica_set, rs_name, namespace, FINALIZE)
        apps.delete_namespaced_replica_set(rs_name, namespace)  # every deletion is allowed
        revoke(admin, stack, served_triton, rogue_model, onViolation="scaleToZero")
        eventually(
            lambda: not _model_pods(admin, namespace, triton_pods.replica_set),
            timeout=60,
            what=f"the revoked model's Pods gone (finalizer on the ReplicaSet {'refused' if refused else 'admitted'})",
        )
        assert refused, "the finalizer on the ReplicaSet must be refused"
    deployment = served_triton.child["metadata"]["name"]
    message = denied(apps.patch_namespaced_deployment, deployment, namespace, FINALIZE)
    assert "metadata.finalizers" in message
    assert KEEP[0] in message


def test_a_finalizer_does_not_keep_a_deleted_model_deployment_serving_after_revocation(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    served_triton: Served,
    rogue_model: SignedModel,
    attack_model: SignedModel,
) -> None:
    """Mallory puts a finalizer on the ModelDeployment (once admitted: the model passed) and deletes it: it stays
    terminating with its children, and the operator never re-checks a ModelDeployment that is being deleted, so the
    revoked model served on at its full replica count. A new ModelDeployment may not bring a finalizer either."""
    namespace = served_triton.namespace
    custom_admin, custom = k8s.CustomObjectsApi(admin), k8s.CustomObjectsApi(mallory)
    md = (GROUP, VERSION, namespace, "modeldeployments")
    deployment = served_triton.child["metadata"]["name"]
    image = served_triton.child["spec"]["template"]["spec"]["containers"][0]["image"]
    another = signed_by_evidence("fraud-two", attack_model, runtime={"kind": "triton", "image": image})
    another["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    another["metadata"]["finalizers"] = KEEP

    def remove() -> Any:
        return custom_admin.patch_namespaced_custom_object(*md, "fraud", {"metadata": {"finalizers": None}})

    def stopped() -> bool:
        try:
            found = k8s.AppsV1Api(admin).read_namespaced_deployment(deployment, namespace)
        except ApiException as exc:
            return bool(exc.status == 404)
        return not found.spec.replicas

    with finalizers_removed_afterwards(lambda: custom_admin.get_namespaced_custom_object(*md, "fraud"), remove):
        refused_new = refused_by_devmlops(custom.create_namespaced_custom_object, *md, another, dry_run="All")
        refused = refused_by_devmlops(custom.patch_namespaced_custom_object, *md, "fraud", FINALIZE)
        custom.delete_namespaced_custom_object(*md, "fraud")
        revoke(admin, stack, served_triton, rogue_model, onViolation="scaleToZero")
        eventually(
            stopped,
            timeout=60,
            what=f"the revoked model's Deployment gone or at zero (finalizer {'refused' if refused else 'admitted'})",
        )
        assert refused, "the finalizer on the ModelDeployment must be refused"
        assert refused_new, "a new ModelDeployment with a finalizer must be refused"
