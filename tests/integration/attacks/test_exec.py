"""Property 1 inside a running Pod: in a namespace under enforcement, ``pods/exec``, ``pods/attach`` and adding
ephemeral containers change what runs, so they are denied unless an unexpired ClusterBreakGlass, which only a
cluster admin can write, covers the namespace and the user (or one of their groups); every use is audited. A
debug container added under a break-glass keeps to Pod Security baseline: it opens the Pod, not the node."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ATTACKER,
    BENIGN,
    ROGUE,
    TOOLBOX,
    ModelPods,
    Served,
    admitted,
    as_dict,
    break_glass,
    cluster_object,
    connect,
    denied,
    exemption,
    forbidden_by_rbac,
    grant_namespace_editor,
    installed_exemption,
    not_denied_by_devmlops,
    pod,
    pod_spec,
    wait_until_allowed,
)
from tests.integration.support import GROUP, VERSION, eventually

TOOLBOX_POD = "toolbox"


def toolbox_exemption(*namespaces: str) -> dict[str, Any]:
    return exemption(f"atk-{namespaces[0]}", list(namespaces), images=[TOOLBOX], service_accounts=["toolbox"])


def toolbox_pod(client: k8s.ApiClient, namespace: str) -> str:
    body = pod(TOOLBOX_POD, pod_spec(TOOLBOX, service_account="toolbox"))
    admitted(k8s.CoreV1Api(client).create_namespaced_pod, namespace, body)
    return TOOLBOX_POD


@pytest.fixture
def exempt_pod(admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str) -> Iterator[str]:
    """An admitted (exempt) Pod in the enforced namespace: nothing of the model server's, so only the break-glass
    rule can deny getting into it."""
    with installed_exemption(admin, toolbox_exemption(enforced_namespace)):
        yield toolbox_pod(mallory, enforced_namespace)


def debug_container(image: str = TOOLBOX, name: str = "debugger") -> Any:
    return {"spec": {"ephemeralContainers": [{"name": name, "image": image, "stdin": True, "tty": True}]}}


def add_ephemeral(client: k8s.ApiClient, namespace: str, name: str, image: str = TOOLBOX) -> Any:
    """``kubectl debug``: the pods/ephemeralcontainers subresource."""
    return k8s.CoreV1Api(client).patch_namespaced_pod_ephemeralcontainers(name, namespace, debug_container(image))


def bg_name(namespace: str, what: str) -> str:
    return f"atk-{what}-{namespace}"[:63].rstrip("-")


# -- without a break-glass: denied -------------------------------------------------------------------------------


def test_exec_into_a_pod_without_a_break_glass_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str
) -> None:
    denied(connect, mallory, enforced_namespace, exempt_pod)


def test_attach_to_a_pod_without_a_break_glass_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str
) -> None:
    denied(connect, mallory, enforced_namespace, exempt_pod, how="attach")


def test_a_port_forward_without_a_break_glass_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str
) -> None:
    """A port-forward dials the Pod's own loopback: where a guarded model server listens (docs/guard.md)."""
    denied(connect, mallory, enforced_namespace, exempt_pod, how="portforward")


def test_adding_an_ephemeral_container_without_a_break_glass_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str
) -> None:
    """Even with the exempt image: a debug container is a way into the running Pod."""
    denied(add_ephemeral, mallory, enforced_namespace, exempt_pod)
    stored = as_dict(k8s.CoreV1Api(mallory).read_namespaced_pod(exempt_pod, enforced_namespace))
    assert not stored["spec"].get("ephemeralContainers")


def test_exec_into_a_model_server_pod_is_denied(
    mallory: k8s.ApiClient, served_triton: Served, triton_pods: ModelPods
) -> None:
    target = triton_pods.pods[0]["metadata"]["name"]
    denied(connect, mallory, served_triton.namespace, target)
    denied(connect, mallory, served_triton.namespace, target, how="attach")
    denied(connect, mallory, served_triton.namespace, target, how="portforward")


def test_adding_a_debug_container_to_a_model_server_pod_is_denied(
    mallory: k8s.ApiClient, served_triton: Served, triton_pods: ModelPods
) -> None:
    target = triton_pods.pods[0]["metadata"]["name"]
    denied(add_ephemeral, mallory, served_triton.namespace, target, ROGUE)


# -- a break-glass covers exactly its users, groups, namespaces and time -----------------------------------------


def test_a_break_glass_for_another_user_does_not_let_mallory_in(
    admin: k8s.ApiClient,
    control_plane: ControlPlane,
    as_user: Callable[[str], k8s.ApiClient],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    exempt_pod: str,
) -> None:
    grant_namespace_editor(admin, control_plane, enforced_namespace, "alice")
    alice = as_user("alice")
    with cluster_object(
        admin,
        "clusterbreakglasses",
        break_glass(bg_name(enforced_namespace, "alice"), [enforced_namespace], users=["alice"]),
    ):
        wait_until_allowed(lambda: connect(alice, enforced_namespace, exempt_pod), what="alice's break-glass exec")
        denied(connect, mallory, enforced_namespace, exempt_pod)
        denied(add_ephemeral, mallory, enforced_namespace, exempt_pod)


def test_a_break_glass_for_another_namespace_does_not_cover_this_one(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    new_namespace: Callable[..., str],
) -> None:
    elsewhere = new_namespace("elsewhere")
    with installed_exemption(admin, toolbox_exemption(enforced_namespace, elsewhere)):
        here, there = toolbox_pod(mallory, enforced_namespace), toolbox_pod(mallory, elsewhere)
        body = break_glass(bg_name(elsewhere, "there"), [elsewhere], users=[ATTACKER])
        with cluster_object(admin, "clusterbreakglasses", body):
            wait_until_allowed(lambda: connect(mallory, elsewhere, there), what="the break-glass over there")
            denied(connect, mallory, enforced_namespace, here)


def test_an_expired_break_glass_does_not_let_mallory_in(
    admin: k8s.ApiClient,
    control_plane: ControlPlane,
    as_user: Callable[[str], k8s.ApiClient],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    exempt_pod: str,
) -> None:
    grant_namespace_editor(admin, control_plane, enforced_namespace, "alice")
    alice = as_user("alice")
    expired = break_glass(
        bg_name(enforced_namespace, "expired"),
        [enforced_namespace],
        users=[ATTACKER],
        expires_in=-dt.timedelta(hours=1),
    )
    valid = break_glass(bg_name(enforced_namespace, "alice"), [enforced_namespace], users=["alice"])
    with cluster_object(admin, "clusterbreakglasses", expired), cluster_object(admin, "clusterbreakglasses", valid):
        # The webhook sees objects in order: once alice's (created second) works, the expired one is known too.
        wait_until_allowed(lambda: connect(alice, enforced_namespace, exempt_pod), what="alice's break-glass exec")
        denied(connect, mallory, enforced_namespace, exempt_pod)


def test_a_break_glass_stops_working_when_it_expires(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str
) -> None:
    body = break_glass(
        bg_name(enforced_namespace, "brief"), [enforced_namespace], users=[ATTACKER], expires_in=dt.timedelta(seconds=8)
    )
    expires = dt.datetime.fromisoformat(body["spec"]["expires"])
    with cluster_object(admin, "clusterbreakglasses", body):
        wait_until_allowed(lambda: connect(mallory, enforced_namespace, exempt_pod), what="exec under break-glass")
        wait = (expires - dt.datetime.now(dt.UTC)).total_seconds() + 1.0
        time.sleep(max(wait, 0.0))  # bounded: at most 9 s
        denied(connect, mallory, enforced_namespace, exempt_pod)


def test_a_break_glass_for_a_group_the_user_is_not_in_does_not_apply(
    admin: k8s.ApiClient,
    control_plane: ControlPlane,
    as_user: Callable[[str], k8s.ApiClient],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    exempt_pod: str,
) -> None:
    grant_namespace_editor(admin, control_plane, enforced_namespace, "alice")
    alice = as_user("alice")
    sre = break_glass(bg_name(enforced_namespace, "sre"), [enforced_namespace], groups=["devmlops:sre"])
    valid = break_glass(bg_name(enforced_namespace, "alice"), [enforced_namespace], users=["alice"])
    with cluster_object(admin, "clusterbreakglasses", sre), cluster_object(admin, "clusterbreakglasses", valid):
        wait_until_allowed(lambda: connect(alice, enforced_namespace, exempt_pod), what="alice's break-glass exec")
        denied(connect, mallory, enforced_namespace, exempt_pod, how="attach")


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"privileged": True}, "spec.ephemeralContainers[0].securityContext.privileged"),
        ({"capabilities": {"add": ["SYS_ADMIN"]}}, "spec.ephemeralContainers[0].securityContext.capabilities.add"),
    ],
    ids=["privileged", "sys-admin"],
)
def test_a_break_glass_debug_container_that_would_reach_the_node_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str, context: Any, field: str
) -> None:
    """A break-glass for this namespace opens its Pods, not the node under them: from a privileged debug container
    (``kubectl debug --profile=sysadmin``) mallory would reach every Pod on the node, other namespaces' model
    servers and their verified bytes among them. A plain debug container is still let in."""
    body = break_glass(bg_name(enforced_namespace, "debug"), [enforced_namespace], users=[ATTACKER])
    with cluster_object(admin, "clusterbreakglasses", body):
        wait_until_allowed(lambda: connect(mallory, enforced_namespace, exempt_pod), what="exec under break-glass")
        core = k8s.CoreV1Api(mallory)
        reaching = debug_container(name="root")
        reaching["spec"]["ephemeralContainers"][0]["securityContext"] = context
        message = denied(core.patch_namespaced_pod_ephemeralcontainers, exempt_pod, enforced_namespace, reaching)
        assert field in message
        admitted(add_ephemeral, mallory, enforced_namespace, exempt_pod)
        stored = as_dict(core.read_namespaced_pod(exempt_pod, enforced_namespace))
        assert [c["name"] for c in stored["spec"]["ephemeralContainers"]] == ["debugger"]


def test_a_namespace_editor_cannot_write_a_break_glass(mallory: k8s.ApiClient, enforced_namespace: str) -> None:
    body = break_glass("mallory-lets-herself-in", [enforced_namespace], users=[ATTACKER])
    api = k8s.CustomObjectsApi(mallory)
    forbidden_by_rbac(api.create_cluster_custom_object, GROUP, VERSION, "clusterbreakglasses", body)


# -- positive controls -------------------------------------------------------------------------------------------


def test_exec_with_a_valid_break_glass_is_allowed_and_audited(
    admin: k8s.ApiClient, stack: DevmlopsStack, mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str
) -> None:
    body = break_glass(bg_name(enforced_namespace, "incident"), [enforced_namespace], users=[ATTACKER])
    with cluster_object(admin, "clusterbreakglasses", body):
        wait_until_allowed(lambda: connect(mallory, enforced_namespace, exempt_pod), what="exec under break-glass")
        not_denied_by_devmlops(connect, mallory, enforced_namespace, exempt_pod)
    assert stack.webhook is not None
    webhook = stack.webhook

    def audited() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in webhook.log_text().splitlines() if line.startswith("{")]
        return [
            line
            for line in lines
            if line.get("namespace") == enforced_namespace
            and line.get("user") == ATTACKER
            and line.get("allowed") is True
            and any(g.get("gate") == "breakglass" for g in line.get("gates") or [])
        ]

    assert eventually(audited, timeout=10, what="an audit line with gate breakglass")


def test_a_break_glass_for_one_of_the_users_groups_allows_attach(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str
) -> None:
    body = break_glass(bg_name(enforced_namespace, "approvers"), [enforced_namespace], groups=["devmlops:approvers"])
    with cluster_object(admin, "clusterbreakglasses", body):
        wait_until_allowed(
            lambda: connect(mallory, enforced_namespace, exempt_pod, how="attach"), what="attach under break-glass"
        )
        not_denied_by_devmlops(connect, mallory, enforced_namespace, exempt_pod, how="attach")


def test_an_ephemeral_container_with_a_valid_break_glass_is_allowed(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, exempt_pod: str
) -> None:
    body = break_glass(bg_name(enforced_namespace, "debug"), [enforced_namespace], users=[ATTACKER])
    with cluster_object(admin, "clusterbreakglasses", body):
        wait_until_allowed(lambda: connect(mallory, enforced_namespace, exempt_pod), what="exec under break-glass")
        admitted(add_ephemeral, mallory, enforced_namespace, exempt_pod)
    stored = as_dict(k8s.CoreV1Api(mallory).read_namespaced_pod(exempt_pod, enforced_namespace))
    assert [c["name"] for c in stored["spec"].get("ephemeralContainers") or []] == ["debugger"]


def test_exec_in_a_namespace_not_under_enforcement_is_not_denied(mallory: k8s.ApiClient, plain_namespace: str) -> None:
    admitted(k8s.CoreV1Api(mallory).create_namespaced_pod, plain_namespace, pod("shell", pod_spec(BENIGN)))
    not_denied_by_devmlops(connect, mallory, plain_namespace, "shell")
    not_denied_by_devmlops(add_ephemeral, mallory, plain_namespace, "shell", BENIGN)
