"""Property 1b outside enforcement: a model's Service sends its traffic only to the Pods devmlops renders for it.

Outside enforced namespaces the API server sent the webhook no Pods, ReplicaSets, DaemonSets, Jobs or CronJobs at
all, and Deployments or StatefulSets only when their own labels, owner or image looked like a model server's. A
model's Service (the operator's Triton Service, KServe's predictor Service) selects Pods by label
(``devmlops.io/model-deployment: <md>``, ``app: isvc.<md>-predictor``): mallory's Pod of her own image wearing that
label, in a namespace without the enforce label, was admitted and selected by the admitted model's Service, so its
clients reached bytes nobody signed; a workload whose pod template wears it did the same through its controller
(these tests failed before: every impostor was created). The model's own Pods, which the cluster's controllers make
there, are still admitted (they derive from the ModelDeployment and match its rendering).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    BENIGN,
    ROGUE,
    TRITON,
    Served,
    admitted,
    as_dict,
    connect,
    create_workload,
    denied,
    not_denied_by_devmlops,
    owned_by,
    pod,
    pod_spec,
    policy_name,
    refused_by_devmlops,
    serve,
    workload,
)
from tests.integration.attacks.test_scale import revoke
from tests.integration.support import SignedModel, eventually, trusting


@pytest.fixture
def served_plain(
    admin: k8s.ApiClient, stack: DevmlopsStack, plain_namespace: str, attack_model: SignedModel
) -> Iterator[Served]:
    """An admitted Triton ModelDeployment "fraud" in a namespace NOT under enforcement, with its Deployment."""
    with trusting(
        admin,
        stack,
        plain_namespace,
        attack_model,
        policy=policy_name(plain_namespace),
        allow={"images": list(ALLOWED_IMAGES)},
    ) as policy:
        yield serve(admin, plain_namespace, attack_model, policy, runtime={"kind": "triton", "image": TRITON})


def _model_service_selector(admin: k8s.ApiClient, namespace: str) -> dict[str, str]:
    """The selector of the model's Service, once the operator has written it (after the Deployment ``serve`` waits
    for: not found until then)."""
    services = k8s.CoreV1Api(admin)
    service = eventually(
        lambda: next(
            iter(services.list_namespaced_service(namespace, field_selector="metadata.name=fraud").items), None
        ),
        timeout=30,
        what="the model's Service",
    )
    return dict(service.spec.selector or {})


def test_outside_enforcement_a_pod_wearing_a_models_service_selector_is_refused(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_plain: Served
) -> None:
    namespace = served_plain.namespace
    selector = _model_service_selector(admin, namespace)
    assert selector == {"devmlops.io/model-deployment": "fraud"}  # what the impostor must wear to take the traffic
    impostor = pod("fraud-impostor", pod_spec(ROGUE), labels=selector)
    message = denied(k8s.CoreV1Api(mallory).create_namespaced_pod, namespace, impostor)
    assert "devmlops.io/model-deployment" in message
    # The model's own Pods are still made there: the ReplicaSet controller's Pods derive from the ModelDeployment.
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)

    def model_pods() -> list[dict[str, Any]]:
        sets = owned_by([as_dict(rs) for rs in apps.list_namespaced_replica_set(namespace).items], served_plain.child)
        return owned_by([as_dict(p) for p in core.list_namespaced_pod(namespace).items], sets[0]) if sets else []

    eventually(model_pods, timeout=30, what="the model's own Pods, made by the ReplicaSet controller")
    # A Pod that wears no model's label is none of devmlops's business here (not under enforcement).
    admitted(k8s.CoreV1Api(mallory).create_namespaced_pod, namespace, pod("shell", pod_spec(BENIGN)))


@pytest.mark.parametrize(
    "labels",
    [{"app": "isvc.fraud-predictor"}, {"devmlops.io/canary-of": "fraud"}],
    ids=["kserve-predictor-selector", "canary-selector"],
)
def test_outside_enforcement_a_pod_wearing_another_models_selector_is_refused(
    mallory: k8s.ApiClient, plain_namespace: str, labels: dict[str, str]
) -> None:
    message = denied(
        k8s.CoreV1Api(mallory).create_namespaced_pod, plain_namespace, pod("impostor", pod_spec(ROGUE), labels=labels)
    )
    assert next(iter(labels)) in message


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"])
def test_outside_enforcement_a_workload_whose_pods_wear_a_models_service_selector_is_refused(
    mallory: k8s.ApiClient, served_plain: Served, kind: str
) -> None:
    body = workload(kind, "fraud-impostor", pod_spec(ROGUE))
    template = body["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else body["spec"]["template"]
    template["metadata"]["labels"]["devmlops.io/model-deployment"] = "fraud"
    message = denied(create_workload, mallory, served_plain.namespace, body)
    assert "devmlops.io/model-deployment" in message


def test_outside_enforcement_no_ephemeral_container_joins_a_model_servers_pod(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_plain: Served
) -> None:
    """``kubectl debug`` of the model's own Pod in a namespace without the enforce label: an ephemeral container may
    mount the Pod's volumes, so one with the verified model's emptyDir mounted read-write rewrites the bytes the
    model server loads after the storage initializer checked them (and shares the loopback where a guarded server
    listens). The pods/ephemeralcontainers subresource of a Pod that wears a model's routing labels is sent now and
    needs a ClusterBreakGlass, as under enforcement; it was admitted before."""
    namespace = served_plain.namespace
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)

    def model_pods() -> list[dict[str, Any]]:
        sets = owned_by([as_dict(rs) for rs in apps.list_namespaced_replica_set(namespace).items], served_plain.child)
        return owned_by([as_dict(p) for p in core.list_namespaced_pod(namespace).items], sets[0]) if sets else []

    target = eventually(model_pods, timeout=30, what="the model's own Pods")[0]
    debugger = {"name": "debugger", "image": ROGUE, "volumeMounts": [{"name": "model", "mountPath": "/rewrite"}]}
    patch = {"spec": {"ephemeralContainers": [debugger]}}
    name = target["metadata"]["name"]
    message = denied(k8s.CoreV1Api(mallory).patch_namespaced_pod_ephemeralcontainers, name, namespace, patch)
    assert "ClusterBreakGlass" in message
    stored = as_dict(core.read_namespaced_pod(name, namespace))
    assert not stored["spec"].get("ephemeralContainers")


def test_outside_enforcement_a_revoked_model_scaled_up_gets_no_new_pods(
    admin: k8s.ApiClient, stack: DevmlopsStack, mallory: k8s.ApiClient, served_plain: Served, rogue_model: SignedModel
) -> None:
    """Property 1c outside enforcement: the scale subresource is not sent from a namespace without the enforce label,
    so mallory could scale a revoked model's Deployment up and its controllers made new Pods of the revoked bytes.
    Its ReplicaSet and Pods wear the model's routing labels, so they are reviewed now, and a revoked model's
    ReplicaSet is not scaled up (the count of its Pods stays where it was)."""
    namespace, name = served_plain.namespace, served_plain.child["metadata"]["name"]
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)

    def model_pods() -> list[dict[str, Any]]:
        sets = [as_dict(rs) for rs in apps.list_namespaced_replica_set(namespace).items]
        pods = [as_dict(p) for p in core.list_namespaced_pod(namespace).items]
        return [p for rs in owned_by(sets, served_plain.child) for p in owned_by(pods, rs)]

    before = len(eventually(model_pods, timeout=30, what="the model's own Pods"))
    revoke(admin, stack, served_plain, rogue_model)
    current = int(as_dict(apps.read_namespaced_deployment_scale(name, namespace))["spec"].get("replicas") or 0)
    refused = refused_by_devmlops(
        k8s.AppsV1Api(mallory).patch_namespaced_deployment_scale, name, namespace, {"spec": {"replicas": current + 3}}
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # bounded: long enough for the controllers to make Pods (they take < 1 s)
        assert len(model_pods()) <= before, f"a revoked model got new Pods (scale {'refused' if refused else 'set'})"
        time.sleep(0.5)


def test_outside_enforcement_no_exec_attach_or_port_forward_reaches_a_model_servers_pod(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_plain: Served
) -> None:
    """``kubectl exec``, ``attach`` and ``port-forward`` into the model's own Pod in a namespace without the enforce
    label. The API server sends a CONNECT with a PodExecOptions (no Pod, no labels), so no matchCondition could pick
    the model's Pods out, and none of the three was sent from such a namespace: each was admitted (then failed only
    for want of a kubelet). Inside the Pod mallory runs what she likes beside the signed server: from the guard's
    container she binds the loopback port the guard forwards to once Triton stops, and the model's clients reach her
    process through the guard (a port-forward alone reaches Triton's loopback around the guard). Every CONNECT from
    such a namespace is sent now; the webhook reads the Pod, and one that wears a model's routing labels needs a
    ClusterBreakGlass, as under enforcement. A Pod there that wears none is still anyone's to open."""
    namespace = served_plain.namespace
    name = _model_pod(admin, served_plain)["metadata"]["name"]
    let_in = [how for how in ("exec", "attach", "portforward") if not _refused(mallory, namespace, name, how)]
    assert let_in == [], f"admitted into the model's own Pod {name}: {let_in}"
    message = denied(connect, mallory, namespace, name, how="exec")
    assert "ClusterBreakGlass" in message
    # A Pod that wears no model's label is none of devmlops's business here (not under enforcement).
    admitted(k8s.CoreV1Api(mallory).create_namespaced_pod, namespace, pod("shell", pod_spec(BENIGN)))
    for how in ("exec", "attach", "portforward"):
        not_denied_by_devmlops(connect, mallory, namespace, "shell", how=how)


def _refused(client: k8s.ApiClient, namespace: str, name: str, how: str) -> bool:
    """devmlops refused the CONNECT (any other answer: admitted, then the API server looked for the Pod's kubelet)."""
    try:
        connect(client, namespace, name, how=how)
    except ApiException as exc:
        return exc.status == 403 and "devmlops" in (exc.body or "")
    return False


def test_outside_enforcement_a_model_servers_own_pod_keeps_its_image(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_plain: Served
) -> None:
    """``kubectl set image pod/...`` on the model's own Pod in a namespace without the enforce label (a Pod's
    containers[].image is mutable), alone and together with dropping the label that sends it to the webhook: both
    are refused (the update is sent for the labels it has or had, and only the model's chain writes its Pods)."""
    namespace = served_plain.namespace
    target = _model_pod(admin, served_plain)
    name, server = target["metadata"]["name"], target["spec"]["containers"][0]["name"]
    core = k8s.CoreV1Api(mallory)
    swap = {"spec": {"containers": [{"name": server, "image": ROGUE}]}}
    denied(core.patch_namespaced_pod, name, namespace, swap)
    unlabelled = {**swap, "metadata": {"labels": {"devmlops.io/model-deployment": None}}}
    denied(core.patch_namespaced_pod, name, namespace, unlabelled)
    stored = as_dict(k8s.CoreV1Api(admin).read_namespaced_pod(name, namespace))
    assert stored["spec"]["containers"][0]["image"] == TRITON
    assert stored["metadata"]["labels"]["devmlops.io/model-deployment"] == "fraud"


def _model_pod(admin: k8s.ApiClient, served: Served) -> dict[str, Any]:
    """One of the Pods the ReplicaSet controller made for the model's Deployment."""
    namespace = served.namespace
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)

    def model_pods() -> list[dict[str, Any]]:
        sets = owned_by([as_dict(rs) for rs in apps.list_namespaced_replica_set(namespace).items], served.child)
        return owned_by([as_dict(p) for p in core.list_namespaced_pod(namespace).items], sets[0]) if sets else []

    pods: list[dict[str, Any]] = eventually(model_pods, timeout=30, what="the model's own Pods")
    return pods[0]
