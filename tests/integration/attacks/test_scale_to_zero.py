"""Property 1c, revocation reaches every model server: nothing an editor writes stops its scale to zero.

A label or an annotation that decides nothing was once admitted on a model server's workloads as "spec unchanged".
The controllers that scale a revoked model to zero write those objects back as they render them, without it: their
scale-down then changed metadata too, was reviewed in full and refused, and the revoked model served on. A model
server's workloads are now written by their controllers only, metadata included (this test failed before)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import KServePods, as_dict, owned_by, refused_by_devmlops
from tests.integration.attacks.test_scale import revoke
from tests.integration.support import SignedModel, eventually


@pytest.mark.parametrize("part", ["labels", "annotations"])
def test_an_editors_metadata_on_kserves_predictor_deployment_does_not_stop_its_scale_to_zero(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    kserve_pods: KServePods,
    rogue_model: SignedModel,
    part: str,
) -> None:
    """Mallory labels (or annotates) KServe's predictor Deployment (once admitted: its spec was unchanged). The cluster
    admin revokes the model's key under onViolation scaleToZero; the operator sets the InferenceService's minReplicas
    to 0, and KServe writes its Deployment with zero replicas as KServe renders it (without mallory's key): the
    predictor Deployment must reach zero replicas."""
    namespace = kserve_pods.served.namespace
    apps = k8s.AppsV1Api(admin)
    (predictor,) = owned_by(
        [as_dict(d) for d in apps.list_namespaced_deployment(namespace).items], kserve_pods.served.child
    )
    name = predictor["metadata"]["name"]
    patch: Any = {"metadata": {part: {"team.example.com/owner": "mallory"}}}
    refused = refused_by_devmlops(k8s.AppsV1Api(mallory).patch_namespaced_deployment, name, namespace, patch)
    revoke(admin, stack, kserve_pods.served, rogue_model, onViolation="scaleToZero")

    def replicas() -> Any:
        return apps.read_namespaced_deployment(name, namespace).spec.replicas

    eventually(
        lambda: replicas() == 0,
        timeout=60,
        what=f"KServe's predictor Deployment at zero replicas ({part} {'refused' if refused else 'admitted'})",
    )
    assert refused, f"mallory's {part} on a model server's Deployment must be refused: its controllers write it"
