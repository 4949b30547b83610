"""Property 1, an exemption's limits: a ``ClusterWorkloadExemption`` lists images and a service account, never how
they run. Mallory, holding an exempt image and account, asks for everything the Pod Security "baseline" level
forbids besides privileged, host namespaces, hostPath and added capabilities (test_pods.py): a port on the node,
unconfined seccomp, AppArmor (field and legacy annotation) and SELinux, an unmasked /proc, an unsafe sysctl, a
probe the kubelet would send to another host, a Windows host process. Each is denied, naming the field; the same
Pod without it, and one with the values baseline permits, is admitted."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from tests.integration.attacks.conftest import (
    LOG_SHIPPER,
    TOOLBOX,
    admitted,
    create_workload,
    denied,
    devmlops_denial,
    exemption,
    installed_exemption,
    pod,
    pod_spec,
    workload,
)

APPARMOR = "container.apparmor.security.beta.kubernetes.io/c0"


def toolbox_exemption(namespace: str) -> dict[str, Any]:
    return exemption(f"atk-{namespace}", [namespace], images=[TOOLBOX, LOG_SHIPPER], service_accounts=["toolbox"])


def toolbox_spec() -> dict[str, Any]:
    return pod_spec(TOOLBOX, init_images=(LOG_SHIPPER,), service_account="toolbox")


def with_context(spec: dict[str, Any], part: str, context: dict[str, Any]) -> dict[str, Any]:
    """``context`` as the securityContext of the Pod (``part`` "pod") or of the first of ``part``'s containers."""
    if part == "pod":
        spec["securityContext"] = context
    else:
        spec[part][0]["securityContext"] = context
    return spec


def with_host_port(spec: dict[str, Any]) -> dict[str, Any]:
    spec["containers"][0]["ports"] = [{"containerPort": 8080, "hostPort": 8080}]
    return spec


def with_probe_host(spec: dict[str, Any]) -> dict[str, Any]:
    spec["containers"][0]["livenessProbe"] = {"httpGet": {"host": "169.254.169.254", "path": "/", "port": 80}}
    return spec


def unconfined(kind: str) -> dict[str, Any]:
    return {kind: {"type": "Unconfined"}}


# name -> (what mallory adds to the exempt Pod's spec, its annotations, the field path the denial must name)
CASES: dict[str, tuple[Any, dict[str, str], str]] = {
    "host-port": (
        with_host_port,
        {},
        "spec.containers[0].ports[0].hostPort",
    ),
    "pod-seccomp-unconfined": (
        lambda s: with_context(s, "pod", unconfined("seccompProfile")),
        {},
        "spec.securityContext.seccompProfile.type",
    ),
    "container-seccomp-unconfined": (
        lambda s: with_context(s, "containers", unconfined("seccompProfile")),
        {},
        "spec.containers[0].securityContext.seccompProfile.type",
    ),
    "pod-apparmor-unconfined": (
        lambda s: with_context(s, "pod", unconfined("appArmorProfile")),
        {},
        "spec.securityContext.appArmorProfile.type",
    ),
    "init-container-apparmor-unconfined": (
        lambda s: with_context(s, "initContainers", unconfined("appArmorProfile")),
        {},
        "spec.initContainers[0].securityContext.appArmorProfile.type",
    ),
    "apparmor-annotation-unconfined": (lambda s: s, {APPARMOR: "unconfined"}, f"metadata.annotations[{APPARMOR}]"),
    "selinux-type": (
        lambda s: with_context(s, "containers", {"seLinuxOptions": {"type": "spc_t"}}),
        {},
        "spec.containers[0].securityContext.seLinuxOptions.type",
    ),
    "selinux-user": (
        lambda s: with_context(s, "pod", {"seLinuxOptions": {"user": "system_u"}}),
        {},
        "spec.securityContext.seLinuxOptions.user",
    ),
    "selinux-role": (
        lambda s: with_context(s, "pod", {"seLinuxOptions": {"role": "system_r"}}),
        {},
        "spec.securityContext.seLinuxOptions.role",
    ),
    "proc-mount-unmasked": (  # the API server accepts Unmasked only in a user namespace
        lambda s: with_context({**s, "hostUsers": False}, "containers", {"procMount": "Unmasked"}),
        {},
        "spec.containers[0].securityContext.procMount",
    ),
    "unsafe-sysctl": (
        lambda s: with_context(s, "pod", {"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}),
        {},
        "spec.securityContext.sysctls[0].name",
    ),
    "probe-to-another-host": (with_probe_host, {}, "spec.containers[0].livenessProbe.httpGet.host"),
    "windows-host-process": (  # the API server accepts a host process only with the node's network (denied too)
        lambda s: with_context({**s, "hostNetwork": True}, "pod", {"windowsOptions": {"hostProcess": True}}),
        {},
        "spec.securityContext.windowsOptions.hostProcess",
    ),
}


def test_an_exempt_pod_with_anything_the_baseline_pod_security_level_forbids_is_denied_naming_the_field(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    with installed_exemption(admin, toolbox_exemption(enforced_namespace)):
        admitted(core.create_namespaced_pod, enforced_namespace, pod("toolbox", toolbox_spec()))
        wrong: list[str] = []
        for name, (change, annotations, field) in CASES.items():
            sent = pod(name, change(toolbox_spec()), annotations=annotations)
            message = devmlops_denial(core.create_namespaced_pod, enforced_namespace, sent, dry_run="All")
            if message is None:
                wrong.append(f"{name}: admitted")
            elif field not in message:
                wrong.append(f"{name}: denied without naming {field}: {message}")
        assert not wrong, "\n".join(wrong)


def test_an_exempt_pod_with_the_values_baseline_permits_is_admitted(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    core = k8s.CoreV1Api(mallory)
    spec = toolbox_spec()
    spec["securityContext"] = {
        "seccompProfile": {"type": "RuntimeDefault"},
        "appArmorProfile": {"type": "RuntimeDefault"},
        "seLinuxOptions": {"type": "container_t", "level": "s0:c123,c456"},
        "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}],
    }
    spec["containers"][0]["ports"] = [{"containerPort": 8080, "hostPort": 0}]
    spec["containers"][0]["livenessProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    spec["containers"][0]["securityContext"] = {"procMount": "Default", "capabilities": {"drop": ["ALL"]}}
    annotations = {APPARMOR: "runtime/default"}
    with installed_exemption(admin, toolbox_exemption(enforced_namespace)):
        admitted(core.create_namespaced_pod, enforced_namespace, pod("confined", spec, annotations=annotations))


def test_an_exempt_deployment_whose_pods_would_take_a_port_on_the_node_is_denied_naming_the_template_field(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    spec = pod_spec(TOOLBOX, service_account="toolbox")
    with installed_exemption(admin, toolbox_exemption(enforced_namespace)):
        admitted(create_workload, mallory, enforced_namespace, workload("Deployment", "toolbox", spec))
        port = workload("Deployment", "toolbox-port", with_host_port(spec))
        message = denied(create_workload, mallory, enforced_namespace, port)
        assert "spec.template.spec.containers[0].ports[0].hostPort" in message
