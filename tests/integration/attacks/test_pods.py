"""Property 1, enforcement where things run: in a namespace under enforcement a Pod runs only if its controller
chain leads, uid by uid and through the trusted controllers, to an admitted ModelDeployment and its containers are
what that chain renders, or if a cluster admin's exemption covers every image and its service account. Labels,
image names, annotations and ownerReferences the requester wrote decide nothing."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.integration.attacks.conftest import (
    BENIGN,
    ENFORCE_LABEL,
    LOG_SHIPPER,
    ROGUE,
    TOOLBOX,
    TRITON,
    KServePods,
    ModelPods,
    Served,
    admitted,
    as_dict,
    denied,
    exemption,
    forbidden_by_rbac,
    installed_exemption,
    owner_ref,
    pod,
    pod_spec,
)
from tests.integration.support import GROUP, VERSION, SignedModel

VERIFICATION = "devmlops.io/verification"


def from_template(name: str, template: dict[str, Any], owners: list[dict[str, Any]]) -> Any:
    """A Pod exactly as a controller would make it from ``template``, claiming ``owners``."""
    metadata = template.get("metadata") or {}
    return pod(
        name,
        dict(template["spec"]),
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        owners=owners,
    )


def toolbox_exemption(namespaces: list[str], *service_accounts: str) -> dict[str, Any]:
    return exemption(
        f"atk-{namespaces[0]}",
        namespaces,
        images=[TOOLBOX, LOG_SHIPPER],
        service_accounts=list(service_accounts or ("toolbox",)),
    )


# -- no chain, no exemption: denied whatever it looks like -------------------------------------------------------


def test_a_bare_pod_running_a_model_server_image_is_denied(mallory: k8s.ApiClient, enforced_namespace: str) -> None:
    body = pod("triton", pod_spec(TRITON))
    message = denied(k8s.CoreV1Api(mallory).create_namespaced_pod, enforced_namespace, body)
    assert "Pod" in message


def test_a_bare_pod_with_a_harmless_looking_image_name_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, enforced_namespace, pod("log-shipper", pod_spec(BENIGN)))


def test_a_pod_with_a_pinned_image_that_no_exemption_names_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, enforced_namespace, pod("pinned", pod_spec(ROGUE)))


def test_a_pod_dressed_as_the_model_server_with_its_labels_annotations_and_spec_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """Everything the operator's Deployment puts on its Pods, but no owner: what it looks like decides nothing."""
    body = from_template("fraud-lookalike", served_triton.child["spec"]["template"], owners=[])
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, served_triton.namespace, body)


def test_a_pod_that_claims_to_be_a_static_mirror_pod_is_denied(mallory: k8s.ApiClient, enforced_namespace: str) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": str(uuid.uuid4()), "controller": True}
    spec = {**pod_spec(TRITON), "nodeName": "node-1"}  # the API server insists that a mirror Pod names its node
    body = pod("mirror", spec, annotations={"kubernetes.io/config.mirror": "0" * 32}, owners=[node])
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, enforced_namespace, body)


def test_a_pod_created_the_moment_a_namespace_comes_under_enforcement_is_denied(
    admin: k8s.ApiClient, request: pytest.FixtureRequest
) -> None:
    """The webhook's caches learn of a new namespace a little later than the API server, which already sends its
    Pods to the webhook: in that window the webhook must fail closed, not treat the namespace as unenforced.
    (A Pod is sent at once, several times, to hit the window.)"""
    core = k8s.CoreV1Api(admin)
    tag = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:6]
    for attempt in range(3):
        name = f"atk-fresh-{tag}-{attempt}"
        namespace: Any = {"metadata": {"name": name, "labels": {ENFORCE_LABEL: "true"}}}
        core.create_namespace(namespace)
        try:
            denied(core.create_namespaced_pod, name, pod("early-bird", pod_spec(BENIGN)))
        finally:
            core.delete_namespace(name)


# -- ownerReferences the requester wrote: uids copied from the real chain ----------------------------------------


def test_a_pod_that_copies_the_model_deployments_uid_into_its_owner_reference_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    template = served_triton.child["spec"]["template"]
    body = from_template("fraud-owned", template, owners=[owner_ref(served_triton.model_deployment)])
    message = denied(k8s.CoreV1Api(mallory).create_namespaced_pod, served_triton.namespace, body)
    assert "fraud-owned" in message or "Pod" in message


def test_a_pod_that_copies_the_inference_services_uid_into_its_owner_reference_is_denied(
    mallory: k8s.ApiClient, served_kserve: Served
) -> None:
    labels = {"serving.kserve.io/inferenceservice": "fraud", "component": "predictor"}
    spec = pod_spec(TRITON)
    spec["containers"][0]["name"] = "kserve-container"
    body = pod("fraud-predictor-forged", spec, labels=labels, owners=[owner_ref(served_kserve.child)])
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, served_kserve.namespace, body)


def test_a_pod_that_copies_the_triton_deployments_uid_and_template_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    deployment = served_triton.child
    body = from_template("fraud-direct", deployment["spec"]["template"], owners=[owner_ref(deployment)])
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, served_triton.namespace, body)


def test_a_pod_that_names_a_replica_set_that_does_not_exist_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    forged = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "fraud-5d8f7c9b6",
        "uid": str(uuid.uuid4()),
        "controller": True,
    }
    body = from_template("fraud-5d8f7c9b6-abcde", served_triton.child["spec"]["template"], owners=[forged])
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, served_triton.namespace, body)


def test_a_pod_that_copies_the_replica_sets_uid_and_template_is_denied(
    mallory: k8s.ApiClient, served_triton: Served, triton_pods: ModelPods
) -> None:
    """The ReplicaSet is real and admitted, the template is its own: only the requester (mallory, not the
    replicaset controller) differs."""
    rs = triton_pods.replica_set
    body = from_template("fraud-extra-replica", rs["spec"]["template"], owners=[owner_ref(rs)])
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, served_triton.namespace, body)


def test_a_pod_that_copies_the_replica_sets_uid_with_one_image_changed_is_denied(
    mallory: k8s.ApiClient, served_triton: Served, triton_pods: ModelPods
) -> None:
    rs = triton_pods.replica_set
    body = from_template("fraud-swapped", rs["spec"]["template"], owners=[owner_ref(rs)])
    body["spec"]["containers"] = [{**c, "image": ROGUE} for c in body["spec"]["containers"]]
    denied(k8s.CoreV1Api(mallory).create_namespaced_pod, served_triton.namespace, body)


# -- changing what an admitted Pod runs --------------------------------------------------------------------------


def test_setting_another_image_on_an_admitted_model_server_pod_is_denied(
    mallory: k8s.ApiClient, served_triton: Served, triton_pods: ModelPods
) -> None:
    """``kubectl set image pod/...``: containers[].image is mutable on a Pod."""
    target = triton_pods.pods[0]
    server = target["spec"]["containers"][0]["name"]
    patch = {"spec": {"containers": [{"name": server, "image": ROGUE}]}}
    core = k8s.CoreV1Api(mallory)
    denied(core.patch_namespaced_pod, target["metadata"]["name"], served_triton.namespace, patch)
    stored = as_dict(core.read_namespaced_pod(target["metadata"]["name"], served_triton.namespace))
    assert stored["spec"]["containers"][0]["image"] == TRITON


def test_setting_an_unlisted_image_on_an_exempt_pod_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace])):
        admitted(
            core.create_namespaced_pod,
            enforced_namespace,
            pod("toolbox", pod_spec(TOOLBOX, service_account="toolbox")),
        )
        patch = {"spec": {"containers": [{"name": "c0", "image": TRITON}]}}
        denied(core.patch_namespaced_pod, "toolbox", enforced_namespace, patch)


def test_swapping_the_verification_plan_on_a_kserve_model_pod_is_denied(
    mallory: k8s.ApiClient, kserve_pods: KServePods, rogue_model: SignedModel
) -> None:
    """KServe's storage initializer reads the plan from the Pod's own annotation (downward API) when it starts:
    an annotation edit on a Pending Pod would decide which key and digest the verifier accepts."""
    target = kserve_pods.pods[0]
    annotations = target["metadata"].get("annotations") or {}
    plan = json.loads(annotations.get(VERIFICATION) or "{}")
    plan["digest"] = rogue_model.digest
    for group in plan.get("policies") or []:
        group["authorities"] = [{"name": "key-0", "kind": "key", "publicKey": rogue_model.key.public_pem}]
    patch = {"metadata": {"annotations": {VERIFICATION: json.dumps(plan)}}}
    name, namespace = target["metadata"]["name"], kserve_pods.served.namespace
    denied(k8s.CoreV1Api(mallory).patch_namespaced_pod, name, namespace, patch)
    removed = {"metadata": {"annotations": {VERIFICATION: None}}}
    denied(k8s.CoreV1Api(mallory).patch_namespaced_pod, name, namespace, removed)


# -- exemptions cover exactly what they name ---------------------------------------------------------------------


def test_a_pod_with_the_exempt_image_but_another_service_account_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace])):
        body = pod("toolbox-as-builder", pod_spec(TOOLBOX, service_account="builder"))
        denied(core.create_namespaced_pod, enforced_namespace, body)


def test_a_pod_without_a_service_account_runs_as_default_which_the_exemption_does_not_list(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace])):
        denied(core.create_namespaced_pod, enforced_namespace, pod("toolbox-default", pod_spec(TOOLBOX)))


def test_the_deprecated_service_account_field_cannot_smuggle_in_another_account(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    """``spec.serviceAccount`` (deprecated) still names the account the Pod runs as when serviceAccountName is unset."""
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace], "default")):
        body = pod("toolbox-legacy", {**pod_spec(TOOLBOX), "serviceAccount": "builder"})
        denied(core.create_namespaced_pod, enforced_namespace, body)


def test_an_exempt_pod_with_one_unlisted_extra_container_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace])):
        body = pod("toolbox-plus", pod_spec(TOOLBOX, TRITON, service_account="toolbox"))
        denied(core.create_namespaced_pod, enforced_namespace, body)


def test_an_exempt_pod_with_one_unlisted_init_container_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace])):
        body = pod("toolbox-init", pod_spec(TOOLBOX, init_images=(BENIGN,), service_account="toolbox"))
        denied(core.create_namespaced_pod, enforced_namespace, body)


@pytest.mark.parametrize(
    "image",
    [
        TOOLBOX.split("@")[0] + ":latest",
        TOOLBOX.split("@")[0] + "@sha256:" + "7" * 64,
        TOOLBOX.split("@")[0],
        TOOLBOX.replace("registry.example.com", "registry.example.com:443"),
        TOOLBOX.split("@")[0] + ":v1@sha256:" + "7" * 64,
    ],
    ids=["by-tag", "another-digest", "bare-name", "same-name-other-registry-spelling", "tag-and-other-digest"],
)
def test_an_image_that_only_resembles_the_exempt_one_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, image: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace])):
        body = pod("near-miss", pod_spec(image, service_account="toolbox"))
        denied(core.create_namespaced_pod, enforced_namespace, body)


def test_an_exemption_for_another_namespace_does_not_cover_this_one(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, new_namespace: Any
) -> None:
    elsewhere = new_namespace("elsewhere")
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([elsewhere])):  # waits until it works over there
        admitted(core.create_namespaced_pod, elsewhere, pod("toolbox", pod_spec(TOOLBOX, service_account="toolbox")))
        body = pod("toolbox", pod_spec(TOOLBOX, service_account="toolbox"))
        denied(core.create_namespaced_pod, enforced_namespace, body)


def test_an_exempt_pod_that_wears_the_model_servers_labels_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """Exempt images and service account, but the labels the operator's Service selects: its traffic (and the
    ReplicaSet's adoption) would reach a Pod that serves whatever it likes. An exemption is for non-model
    workloads only."""
    namespace = served_triton.namespace
    with installed_exemption(admin, toolbox_exemption([namespace])):
        labels = dict(served_triton.child["spec"]["template"]["metadata"]["labels"])
        body = pod("fraud-impostor", pod_spec(TOOLBOX, service_account="toolbox"), labels=labels)
        denied(k8s.CoreV1Api(mallory).create_namespaced_pod, namespace, body)


def test_relabelling_an_exempt_pod_with_the_model_servers_labels_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """The same impostor in two steps: an innocent exempt Pod first, the model server's labels in a metadata-only
    update afterwards."""
    namespace = served_triton.namespace
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([namespace])):
        body = pod("toolbox", pod_spec(TOOLBOX, service_account="toolbox"), labels={"app": "toolbox"})
        admitted(core.create_namespaced_pod, namespace, body)
        labels = dict(served_triton.child["spec"]["template"]["metadata"]["labels"])
        denied(core.patch_namespaced_pod, "toolbox", namespace, {"metadata": {"labels": labels}})


def test_a_namespace_editor_can_neither_write_exemptions_nor_take_the_namespace_out_of_enforcement(
    mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    body = exemption("mallory-was-here", [enforced_namespace], images=[ROGUE], service_accounts=["default"])
    custom = k8s.CustomObjectsApi(mallory)
    forbidden_by_rbac(custom.create_cluster_custom_object, GROUP, VERSION, "clusterworkloadexemptions", body)
    patch = {"metadata": {"labels": {"devmlops.io/enforce": "false"}}}
    forbidden_by_rbac(k8s.CoreV1Api(mallory).patch_namespace, enforced_namespace, patch)


# -- positive controls: what must still run ----------------------------------------------------------------------


def test_a_pod_in_a_namespace_not_under_enforcement_is_admitted(mallory: k8s.ApiClient, plain_namespace: str) -> None:
    created = admitted(
        k8s.CoreV1Api(mallory).create_namespaced_pod, plain_namespace, pod("log-shipper", pod_spec(BENIGN))
    )
    assert created.metadata.name == "log-shipper"


def test_a_pod_an_exemption_covers_is_admitted_with_its_init_containers(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace], "toolbox", "default")):
        body = pod("shipper", pod_spec(TOOLBOX, init_images=(LOG_SHIPPER,), service_account="toolbox"))
        assert admitted(core.create_namespaced_pod, enforced_namespace, body).metadata.name == "shipper"
        unset = pod("shipper-default", pod_spec(LOG_SHIPPER))  # serviceAccountName unset: "default", listed
        assert admitted(core.create_namespaced_pod, enforced_namespace, unset).metadata.name == "shipper-default"


def test_the_pods_the_replicaset_controller_makes_for_an_admitted_model_are_admitted(
    served_triton: Served, triton_pods: ModelPods
) -> None:
    rs = triton_pods.replica_set
    assert owner_ref(served_triton.child)["uid"] in [r["uid"] for r in rs["metadata"]["ownerReferences"]]
    for made in triton_pods.pods:
        assert [r["uid"] for r in made["metadata"]["ownerReferences"]] == [rs["metadata"]["uid"]]
        assert [c["image"] for c in made["spec"]["containers"]] == [TRITON]


def test_deleting_a_pod_is_always_allowed_even_once_nothing_covers_it(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace])):
        body = pod("short-lived", pod_spec(TOOLBOX, service_account="toolbox"))
        admitted(core.create_namespaced_pod, enforced_namespace, body)
    admitted(core.delete_namespaced_pod, "short-lived", enforced_namespace)


def test_deleting_a_model_server_pod_is_allowed(
    mallory: k8s.ApiClient, served_triton: Served, triton_pods: ModelPods
) -> None:
    name = triton_pods.pods[0]["metadata"]["name"]
    admitted(k8s.CoreV1Api(mallory).delete_namespaced_pod, name, served_triton.namespace)


@pytest.mark.parametrize(
    "reach",
    [
        {"hostPID": True},
        {"hostNetwork": True},
        {"volumes": [{"name": "node", "hostPath": {"path": "/var/lib/kubelet"}}]},
        {"privileged": True},
    ],
    ids=["host-pid", "host-network", "host-path", "privileged"],
)
def test_an_exempt_pod_that_reaches_the_node_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, reach: dict[str, Any]
) -> None:
    """From the node a Pod could rewrite a model Pod's verified bytes after the storage initializer checked them:
    an exemption lists images and accounts, never host access."""
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption([enforced_namespace])):
        spec = pod_spec(TOOLBOX, service_account="toolbox")
        if reach.pop("privileged", False):
            spec["containers"][0]["securityContext"] = {"privileged": True}
        spec.update(reach)
        message = denied(core.create_namespaced_pod, enforced_namespace, pod("toolbox-host", spec))
        assert "exemption" in message.lower()
