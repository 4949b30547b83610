"""The KServe attack review: what a namespace editor can make KServe put into an admitted model's predictor Pods.

KServe's Pod webhook builds the storage initializer of every predictor Pod from the Pod's ServiceAccount, which the
namespace's editors may edit (the built-in ``edit`` role grants ``serviceaccounts``; docs/threat-model.md): the
``serving.kserve.io/s3-*`` annotations of the ServiceAccount (with ``eks.amazonaws.com/role-arn``) or of a Secret it
lists become the initializer's S3 settings, and ``s3-cabundle-configmap`` with ``s3-cabundle`` mount a ConfigMap the
editor names at the directory of the path she writes. Over the initializer's site-packages, a ``.pth`` file of hers
is code that Python runs in the very process that verifies the model's bytes, before it verifies anything.

KServe v0.16.0 (the stack's) merges devmlops's ClusterStorageContainer into such an initializer wrongly (its issue
#5516, fixed in v0.20.0): the merged environment entries carry both ``value`` and ``valueFrom``, and the API server
refuses the Pod. So the first two tests write the Pod as a later KServe makes it, as the trusted ReplicaSet controller
(what devmlops admits is the question): the ConfigMap over site-packages, and the S3 endpoint (``s3-endpoint``), which
answers for a bucket that ``allow.storageUris`` binds only by name. The third goes through the real KServe, whichever
refuses it. The review also found the model's URI itself expanded by the kubelet as the storage initializer's
argument (its cases are in ``test_storage_uris.py``).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client
from devmlops.harness.controlplane import ControlPlane
from tests.integration.attacks.conftest import (
    ATTACKER,
    KServePods,
    admitted,
    as_dict,
    denied,
    policy_name,
    wait_until_allowed,
    why_not,
)
from tests.integration.support import GROUP, VERSION

# Where the devmlops image's interpreter imports from (Dockerfile: a venv at /opt/devmlops on python:3.11): a
# ConfigMap mounted here is the initializer's site-packages, and site.py runs every ``import`` line of its .pth files.
SITE_PACKAGES = "/opt/devmlops/lib/python3.11/site-packages"
PAYLOAD = "import os; os.write(2, b'mallory runs here first\\n')\n"
REPLICASET_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"


def _as_new(made: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored predictor Pod as the ReplicaSet controller would create it again, and its storage initializer."""
    metadata = {k: copy.deepcopy(made["metadata"][k]) for k in ("labels", "annotations", "ownerReferences")}
    metadata["name"] = made["metadata"]["name"] + "-again"
    spec = copy.deepcopy(made["spec"])
    spec.pop("nodeName", None)
    (initializer,) = [c for c in spec["initContainers"] if c["name"] == "storage-initializer"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}, initializer


def _with_endpoint(made: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """A stored predictor Pod as new, and as KServe's Pod webhook (v0.20.0) makes it for a ServiceAccount annotated
    with ``eks.amazonaws.com/role-arn`` and ``serving.kserve.io/s3-endpoint: <endpoint>``."""
    pod, initializer = _as_new(made)
    initializer["env"] = [
        *initializer.get("env", []),
        {"name": "S3_ENDPOINT", "value": endpoint},
        {"name": "AWS_ENDPOINT_URL", "value": f"https://{endpoint}"},
    ]
    return pod


def _as_kserve_mounts_it(made: dict[str, Any], config_map: str, directory: str) -> dict[str, Any]:
    """A stored predictor Pod as new, and as KServe's Pod webhook (v0.20.0) makes it for a ServiceAccount annotated
    with ``s3-cabundle-configmap: <config_map>`` and ``s3-cabundle: <directory>/ca.pem``."""
    pod, initializer = _as_new(made)
    spec = pod["spec"]
    spec["volumes"] = [*spec.get("volumes", []), {"name": "cabundle-cert", "configMap": {"name": config_map}}]
    initializer["env"] = [
        *initializer.get("env", []),
        {"name": "AWS_CA_BUNDLE_CONFIGMAP", "value": config_map},
        {"name": "AWS_CA_BUNDLE", "value": f"{directory}/ca.pem"},
        {"name": "CA_BUNDLE_CONFIGMAP_NAME", "value": config_map},
        {"name": "CA_BUNDLE_VOLUME_MOUNT_POINT", "value": directory},
    ]
    mount = {"name": "cabundle-cert", "mountPath": directory, "readOnly": True}
    initializer["volumeMounts"] = [*initializer.get("volumeMounts", []), mount]
    return pod


def test_a_predictor_pod_whose_storage_initializer_mounts_a_config_map_over_its_code_is_denied(
    admin: k8s.ApiClient, control_plane: ControlPlane, kserve_pods: KServePods
) -> None:
    """The ReplicaSet controller's Pod as KServe's Pod webhook makes it once mallory annotated the ServiceAccount: her
    ConfigMap over the storage initializer's site-packages. The same Pod without that mount is admitted (control)."""
    namespace = kserve_pods.served.namespace
    made = kserve_pods.pods[0]
    again = _as_kserve_mounts_it(made, "ca", SITE_PACKAGES)
    control = copy.deepcopy(again)
    control["spec"]["volumes"] = made["spec"].get("volumes", [])
    (initializer,) = [c for c in control["spec"]["initContainers"] if c["name"] == "storage-initializer"]
    initializer["volumeMounts"] = [m for m in initializer["volumeMounts"] if m["name"] != "cabundle-cert"]
    with api_client(control_plane.kubeconfig("admin")) as client:
        client.set_default_header("Impersonate-User", REPLICASET_CONTROLLER)
        core = k8s.CoreV1Api(client)
        admitted(core.create_namespaced_pod, namespace, control, dry_run="All")
        message = denied(core.create_namespaced_pod, namespace, again, dry_run="All")
    assert SITE_PACKAGES in message, message


def test_an_s3_endpoint_is_given_to_the_storage_initializer_only_where_a_cluster_policy_allows_it(
    admin: k8s.ApiClient, control_plane: ControlPlane, kserve_pods: KServePods
) -> None:
    """The residual of the bytes review: mallory's ``serving.kserve.io/s3-endpoint`` on the ServiceAccount chose who
    answers for the model's ``s3://`` bucket (``allow.storageUris`` binds only its name). Her endpoint is refused; the
    one the cluster admin then allows in the ClusterModelPolicy is admitted, and hers still is not."""
    namespace = kserve_pods.served.namespace
    made = kserve_pods.pods[0]
    with api_client(control_plane.kubeconfig("admin")) as client:
        client.set_default_header("Impersonate-User", REPLICASET_CONTROLLER)
        create = k8s.CoreV1Api(client).create_namespaced_pod
        message = denied(create, namespace, _with_endpoint(made, "mallory.example.com"), dry_run="All")
        assert "mallory.example.com" in message, message
        allowing = {"spec": {"allow": {"s3Endpoints": ["minio.models.svc:9000"]}}}
        policies = k8s.CustomObjectsApi(admin)
        policies.patch_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", policy_name(namespace), allowing)
        wait_until_allowed(
            lambda: create(namespace, _with_endpoint(made, "minio.models.svc:9000"), dry_run="All"),
            what="a predictor Pod whose initializer is given the S3 endpoint the policy allows",
        )
        denied(create, namespace, _with_endpoint(made, "mallory.example.com"), dry_run="All")


def _grant_service_accounts(admin: k8s.ApiClient, namespace: str) -> None:
    """What the built-in ``edit`` role grants beyond the attack tests' Role: writing ServiceAccounts."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    verbs = ["create", "update", "patch", "delete", "get", "list", "watch"]
    role: Any = {
        "metadata": {"name": "edit-serviceaccounts"},
        "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": verbs}],
    }
    binding: Any = {
        "metadata": {"name": "edit-serviceaccounts"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "edit-serviceaccounts"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ATTACKER}],
    }
    rbac.create_namespaced_role(namespace, role)
    rbac.create_namespaced_role_binding(namespace, binding)


def _predictor_pods(core: k8s.CoreV1Api, namespace: str) -> list[dict[str, Any]]:
    selector = "serving.kserve.io/inferenceservice=fraud"
    return [as_dict(p) for p in core.list_namespaced_pod(namespace, label_selector=selector).items]


def _refusals(core: k8s.CoreV1Api, namespace: str) -> list[str]:
    events = core.list_namespaced_event(namespace).items
    return [e.message or "" for e in events if e.reason == "FailedCreate"]


def _mounts_of(pod: dict[str, Any], config_map: str) -> list[str]:
    """The storage initializer's mount paths of volumes that read ``config_map``."""
    volumes = {
        v["name"] for v in pod["spec"].get("volumes") or [] if (v.get("configMap") or {}).get("name") == config_map
    }
    return [
        m["mountPath"]
        for c in pod["spec"].get("initContainers") or []
        if c["name"] == "storage-initializer"
        for m in c.get("volumeMounts") or []
        if m["name"] in volumes
    ]


def test_a_config_map_of_the_editors_never_reaches_the_storage_initializer_through_kserve(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, kserve_pods: KServePods
) -> None:
    """mallory annotates the namespace's default ServiceAccount (the predictor Pods' own) so that KServe mounts her
    ConfigMap over the initializer's site-packages, then deletes the model's Pods: the ReplicaSet makes new ones
    through KServe's Pod webhook, and none of them may mount her ConfigMap (v0.16.0's API server refuses them for
    KServe's merge; a later KServe's, devmlops refuses)."""
    namespace = kserve_pods.served.namespace
    _grant_service_accounts(admin, namespace)
    core = k8s.CoreV1Api(mallory)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "ca"}, "data": {"zz-ca.pth": PAYLOAD}})
    annotations = {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::000000000000:role/models",
        "serving.kserve.io/s3-cabundle-configmap": "ca",
        "serving.kserve.io/s3-cabundle": f"{SITE_PACKAGES}/ca.pem",
    }
    deadline = time.monotonic() + 15
    while True:  # RBAC's authorizer follows the new binding asynchronously
        try:
            core.patch_namespaced_service_account("default", namespace, {"metadata": {"annotations": annotations}})
            break
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    old = {p["metadata"]["name"] for p in kserve_pods.pods}
    for name in old:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    admin_core = k8s.CoreV1Api(admin)
    deadline = time.monotonic() + 60
    while True:
        new = [p for p in _predictor_pods(admin_core, namespace) if p["metadata"]["name"] not in old]
        if new or _refusals(admin_core, namespace):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no new predictor Pod and no refusal within 60s: {why_not(admin, namespace)}")
        time.sleep(0.5)
    mounted = {p["metadata"]["name"]: _mounts_of(p, "ca") for p in new}
    assert not any(mounted.values()), (
        f"admitted, but devmlops must deny it: predictor Pods whose storage initializer mounts mallory's ConfigMap "
        f"'ca' at {mounted} (her .pth file runs in the verifying process)"
    )
