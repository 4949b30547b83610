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
from tests.integration.attacks.conftest import (
    TOOLBOX,
    KServePods,
    ModelPods,
    Served,
    as_dict,
    create_workload,
    installed_exemption,
    owned_by,
    pod_spec,
    refused_by_devmlops,
    workload,
)
from tests.integration.attacks.test_scale import revoke
from tests.integration.attacks.test_workloads import shipper_exemption
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


def test_a_decoy_replica_set_wearing_the_model_deployments_selector_does_not_stop_its_scale_to_zero(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    served_triton: Served,
    triton_pods: ModelPods,
    rogue_model: SignedModel,
) -> None:
    """The Deployment controller adopts every orphan ReplicaSet whose own labels match its selector. Mallory creates
    an exempt ReplicaSet (zero replicas, an exempt image and account, its template labelled as her own) whose
    metadata carries the Triton Deployment's selector labels: once admitted (only template labels were checked), the
    controller's adoption was refused by devmlops (the template is not the model's), which fails every sync of the
    Deployment, so the scale to zero of the revoked model never reached its ReplicaSet."""
    namespace = served_triton.namespace
    selector = served_triton.child["spec"]["selector"]["matchLabels"]
    decoy = workload("ReplicaSet", "decoy", pod_spec(TOOLBOX, service_account="shipper"), replicas=0)
    decoy["metadata"]["labels"] = dict(selector)
    with installed_exemption(admin, shipper_exemption(namespace)):
        refused = refused_by_devmlops(create_workload, mallory, namespace, decoy)
        revoke(admin, stack, served_triton, rogue_model, onViolation="scaleToZero")
        core = k8s.CoreV1Api(admin)
        eventually(
            lambda: (
                not owned_by([as_dict(p) for p in core.list_namespaced_pod(namespace).items], triton_pods.replica_set)
            ),
            timeout=60,
            what=f"the revoked model's Pods gone (decoy ReplicaSet {'refused' if refused else 'admitted'})",
        )
        assert refused, "a ReplicaSet that does not derive from a model may not wear a model's selector labels"


def test_a_removed_signature_document_does_not_stop_a_revoked_models_scale_to_zero(
    admin: k8s.ApiClient, stack: DevmlopsStack, mallory: k8s.ApiClient, served_triton: Served, rogue_model: SignedModel
) -> None:
    """Mallory deletes the ConfigMap that holds the signature bundle of the served model (ConfigMaps are hers to
    write, and no review sees them). The cluster admin then revokes the model's key under onViolation scaleToZero:
    the Deployment must reach zero replicas (before: the operator could read no bundle, gave up on each reconcile
    before it decided anything and retried it for ever, so the revoked model served on)."""
    namespace = served_triton.namespace
    k8s.CoreV1Api(mallory).delete_namespaced_config_map("evidence", namespace)
    revoke(admin, stack, served_triton, rogue_model, onViolation="scaleToZero")
    apps = k8s.AppsV1Api(admin)
    name = served_triton.child["metadata"]["name"]
    eventually(
        lambda: apps.read_namespaced_deployment(name, namespace).spec.replicas == 0,
        timeout=60,
        what="the revoked model's Deployment at zero replicas, its signature document gone",
    )
