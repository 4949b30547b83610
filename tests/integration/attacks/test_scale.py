"""Property 4, subresources: ``scale`` of every reviewed kind is reviewed. Scaling up a model server whose
ModelDeployment no longer passes (here: the cluster policy stopped trusting its key) is denied, through the scale
subresource as through a patch of the replica count; the scale-down fast path compares everything but the replica
count, metadata included, so a scale-down cannot carry another change in with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    BENIGN,
    ENFORCE_LABEL,
    KSERVE_GROUP,
    ROGUE,
    TOOLBOX,
    TRITON,
    KServePods,
    ModelPods,
    Served,
    admitted,
    as_dict,
    create_workload,
    denied,
    exemption,
    installed_exemption,
    owned_by,
    pod,
    pod_spec,
    serve,
    wait_until_denied,
    workload,
)
from tests.integration.support import GROUP, VERSION, SignedModel

ISVC = (KSERVE_GROUP, "v1beta1")
DIGEST = "devmlops.io/model-digest"
TRITON_RUNTIME_3 = {"kind": "triton", "image": TRITON, "replicas": 3}


def revoke(admin: k8s.ApiClient, stack: DevmlopsStack, served: Served, rogue: SignedModel, **spec: Any) -> None:
    """The cluster admin replaces the trusted key with another one: the served model no longer passes (``spec``: more
    policy fields, ``onViolation="scaleToZero"`` for one). Returns once the webhook compiled the new policy."""
    name = served.policy["metadata"]["name"]
    before = str(stack.webhook_status().get("policyRevision", ""))
    patch = {"spec": {"authorities": [{"name": "key-0", "key": {"publicKey": rogue.key.public_pem}}], **spec}}
    k8s.CustomObjectsApi(admin).patch_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", name, patch)
    stack.wait_for_policies(present=[name], revision_not=before)


@pytest.fixture
def revoked_triton(
    admin: k8s.ApiClient, stack: DevmlopsStack, served_triton: Served, rogue_model: SignedModel
) -> Served:
    revoke(admin, stack, served_triton, rogue_model)
    return served_triton


@pytest.fixture
def revoked_kserve(
    admin: k8s.ApiClient, stack: DevmlopsStack, served_kserve: Served, rogue_model: SignedModel
) -> Served:
    revoke(admin, stack, served_kserve, rogue_model)
    return served_kserve


def deployment_replicas(client: k8s.ApiClient, served: Served) -> int:
    scale = k8s.AppsV1Api(client).read_namespaced_deployment_scale(served.child["metadata"]["name"], served.namespace)
    return int(as_dict(scale)["spec"].get("replicas") or 0)


def scale_body(replicas: int) -> Any:
    return {"spec": {"replicas": replicas}}


# -- scaling up what no longer passes ----------------------------------------------------------------------------


def test_scaling_up_a_revoked_model_server_through_the_scale_subresource_is_denied(
    mallory: k8s.ApiClient, revoked_triton: Served
) -> None:
    apps = k8s.AppsV1Api(mallory)
    wanted = deployment_replicas(mallory, revoked_triton) + 2
    name = revoked_triton.child["metadata"]["name"]
    denied(apps.patch_namespaced_deployment_scale, name, revoked_triton.namespace, scale_body(wanted))
    whole: Any = {"metadata": {"name": name, "namespace": revoked_triton.namespace}, "spec": {"replicas": wanted}}
    denied(apps.replace_namespaced_deployment_scale, name, revoked_triton.namespace, whole)
    assert deployment_replicas(mallory, revoked_triton) < wanted


def test_scaling_up_a_revoked_model_server_by_patching_its_replicas_is_denied(
    mallory: k8s.ApiClient, revoked_triton: Served
) -> None:
    apps = k8s.AppsV1Api(mallory)
    wanted = deployment_replicas(mallory, revoked_triton) + 2
    name = revoked_triton.child["metadata"]["name"]
    denied(apps.patch_namespaced_deployment, name, revoked_triton.namespace, scale_body(wanted))


def test_scaling_up_a_revoked_inference_service_is_denied(mallory: k8s.ApiClient, revoked_kserve: Served) -> None:
    custom = k8s.CustomObjectsApi(mallory)
    current: Any = custom.get_namespaced_custom_object(*ISVC, revoked_kserve.namespace, "inferenceservices", "fraud")
    wanted = int(current["spec"]["predictor"].get("minReplicas") or 0) + 2
    patch = {"spec": {"predictor": {"minReplicas": wanted, "maxReplicas": wanted}}}
    denied(custom.patch_namespaced_custom_object, *ISVC, revoked_kserve.namespace, "inferenceservices", "fraud", patch)


def test_scaling_up_the_replica_set_of_a_revoked_model_server_is_denied(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    served_triton: Served,
    triton_pods: ModelPods,
    rogue_model: SignedModel,
) -> None:
    """Under the Deployment, its ReplicaSet has a scale subresource of its own (needs kube-controller-manager)."""
    revoke(admin, stack, served_triton, rogue_model)
    rs = triton_pods.replica_set
    apps = k8s.AppsV1Api(mallory)
    name = rs["metadata"]["name"]
    current = as_dict(apps.read_namespaced_replica_set_scale(name, served_triton.namespace))["spec"].get("replicas")
    denied(apps.patch_namespaced_replica_set_scale, name, served_triton.namespace, scale_body(int(current or 0) + 3))
    denied(apps.patch_namespaced_replica_set, name, served_triton.namespace, scale_body(int(current or 0) + 3))


def test_scaling_up_kserves_predictor_deployment_of_a_revoked_model_is_denied(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    kserve_pods: KServePods,
    rogue_model: SignedModel,
) -> None:
    """KServe made the Deployment; its scale subresource is a way around the InferenceService's minReplicas."""
    namespace = kserve_pods.served.namespace
    items = [as_dict(d) for d in k8s.AppsV1Api(admin).list_namespaced_deployment(namespace).items]
    (predictor,) = owned_by(items, kserve_pods.served.child)
    revoke(admin, stack, kserve_pods.served, rogue_model)
    apps = k8s.AppsV1Api(mallory)
    name = predictor["metadata"]["name"]
    current = as_dict(apps.read_namespaced_deployment_scale(name, namespace))["spec"].get("replicas")
    denied(apps.patch_namespaced_deployment_scale, name, namespace, scale_body(int(current or 0) + 3))


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "ReplicaSet"])
def test_a_workload_made_before_enforcement_cannot_be_scaled_up_after_it(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, plain_namespace: str, kind: str
) -> None:
    """mallory parks a zero-replica workload while nobody enforces; once the cluster admin puts the namespace
    under enforcement, scaling it up is a new decision."""
    apps = k8s.AppsV1Api(mallory)
    admitted(create_workload, mallory, plain_namespace, workload(kind, "parked", pod_spec(BENIGN), replicas=0))
    label: Any = {"metadata": {"labels": {ENFORCE_LABEL: "true"}}}
    k8s.CoreV1Api(admin).patch_namespace(plain_namespace, label)
    probe: Any = pod("probe", pod_spec(BENIGN))

    def enforcement_seen() -> None:
        k8s.CoreV1Api(mallory).create_namespaced_pod(plain_namespace, probe, dry_run="All")

    wait_until_denied(enforcement_seen, what=f"enforcement of {plain_namespace}")
    scale: dict[str, Callable[..., Any]] = {
        "Deployment": apps.patch_namespaced_deployment_scale,
        "StatefulSet": apps.patch_namespaced_stateful_set_scale,
        "ReplicaSet": apps.patch_namespaced_replica_set_scale,
    }
    denied(scale[kind], "parked", plain_namespace, scale_body(3))


# -- the scale-down fast path carries nothing else ---------------------------------------------------------------


def test_a_scale_down_that_also_changes_the_image_is_denied(mallory: k8s.ApiClient, served_triton: Served) -> None:
    server = served_triton.child["spec"]["template"]["spec"]["containers"][0]["name"]
    patch = {"spec": {"replicas": 0, "template": {"spec": {"containers": [{"name": server, "image": ROGUE}]}}}}
    apps = k8s.AppsV1Api(mallory)
    denied(apps.patch_namespaced_deployment, served_triton.child["metadata"]["name"], served_triton.namespace, patch)


def test_a_scale_down_that_also_changes_metadata_is_denied(mallory: k8s.ApiClient, served_triton: Served) -> None:
    patch = {"metadata": {"annotations": {DIGEST: "sha256:" + "9" * 64}}, "spec": {"replicas": 0}}
    apps = k8s.AppsV1Api(mallory)
    denied(apps.patch_namespaced_deployment, served_triton.child["metadata"]["name"], served_triton.namespace, patch)


def test_a_scale_down_of_an_inference_service_that_also_changes_its_storage_uri_is_denied(
    mallory: k8s.ApiClient, served_kserve: Served
) -> None:
    patch = {"spec": {"predictor": {"minReplicas": 0, "model": {"storageUri": "devmlops+s3://models/poisoned"}}}}
    custom = k8s.CustomObjectsApi(mallory)
    denied(custom.patch_namespaced_custom_object, *ISVC, served_kserve.namespace, "inferenceservices", "fraud", patch)


# -- positive controls -------------------------------------------------------------------------------------------


def test_scaling_a_model_server_down_is_allowed_through_the_subresource_and_by_patch(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
) -> None:
    served = serve(admin, enforced_namespace, attack_model, trusted, runtime=TRITON_RUNTIME_3)
    apps = k8s.AppsV1Api(mallory)
    name = served.child["metadata"]["name"]
    admitted(apps.patch_namespaced_deployment_scale, name, enforced_namespace, scale_body(1))
    admitted(apps.patch_namespaced_deployment, name, enforced_namespace, scale_body(0))
    assert deployment_replicas(mallory, served) == 0


def test_scaling_a_revoked_model_server_down_is_allowed(
    mallory: k8s.ApiClient,
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
    rogue_model: SignedModel,
    trusted: dict[str, Any],
) -> None:
    served = serve(admin, enforced_namespace, attack_model, trusted, runtime=TRITON_RUNTIME_3)
    revoke(admin, stack, served, rogue_model)
    apps = k8s.AppsV1Api(mallory)
    admitted(
        apps.patch_namespaced_deployment_scale, served.child["metadata"]["name"], enforced_namespace, scale_body(0)
    )
    assert deployment_replicas(mallory, served) == 0


def test_scaling_an_exempt_deployment_up_is_allowed(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    covers = exemption(
        f"atk-{enforced_namespace}", [enforced_namespace], images=[TOOLBOX], service_accounts=["shipper"]
    )
    apps = k8s.AppsV1Api(mallory)
    with installed_exemption(admin, covers):
        body = workload("Deployment", "shipper", pod_spec(TOOLBOX, service_account="shipper"))
        admitted(create_workload, mallory, enforced_namespace, body)
        scaled = admitted(apps.patch_namespaced_deployment_scale, "shipper", enforced_namespace, scale_body(4))
        assert as_dict(scaled)["spec"]["replicas"] == 4
