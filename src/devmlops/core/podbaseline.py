"""What no exemption ever covers: a Pod that the Pod Security Standards' "baseline" level forbids.

A ``ClusterWorkloadExemption`` lists images and service accounts; it says nothing about how the Pod runs them. A Pod
that reaches past its own containers (the node's namespaces, files or ports, the kernel's unconfined seccomp,
AppArmor or SELinux domains, an unmasked /proc, unsafe sysctls, a Windows host process, probes the kubelet sends to
another host) could rewrite a model Pod's verified bytes after the storage initializer checked them, or take a
model's traffic on the node: so an exempt Pod must keep to the baseline level
(https://kubernetes.io/docs/concepts/security/pod-security-standards/, as of Kubernetes 1.34), whatever the
namespace's own Pod Security label says (a namespace editor cannot set it, but nothing guarantees a cluster admin
did). Stricter than baseline in one point: no capability may be added at all.

Every check is an allow-list of the values baseline permits, so a value this module does not know is refused; each
finding names its field path (``where`` is the path of the pod template: "" for a Pod, "spec.template." for a
Deployment). A break-glass debug container is held to the same (core/workloads.py): a break-glass opens a Pod of
its namespaces, not the node under it (a privileged debug container reaches every Pod there, other namespaces'
model servers among them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.podspec import containers, items, mapping

__all__ = ["baseline_problems", "container_baseline_problems"]

# Baseline's safe sysctls (the kubelet's default allow-list).
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
_PROFILE_TYPES = (None, "RuntimeDefault", "Localhost")  # seccompProfile.type and appArmorProfile.type
_SELINUX_TYPES = (None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _got(path: str, value: Any, expected: str) -> str:
    return f"{path}: got {value!r}, expected {expected}"


def _context_problems(context: Mapping[str, Any], path: str) -> list[str]:
    """What a Pod's and a container's securityContext share: seccomp, AppArmor, SELinux, Windows host process."""
    problems: list[str] = []
    for key in ("seccompProfile", "appArmorProfile"):
        kind = mapping(context.get(key)).get("type")
        if kind not in _PROFILE_TYPES:
            problems.append(_got(f"{path}.{key}.type", kind, "RuntimeDefault, Localhost or unset"))
    selinux = mapping(context.get("seLinuxOptions"))
    if selinux.get("type") not in _SELINUX_TYPES:
        problems.append(_got(f"{path}.seLinuxOptions.type", selinux.get("type"), f"one of {list(_SELINUX_TYPES)}"))
    problems += [
        _got(f"{path}.seLinuxOptions.{key}", selinux[key], "unset")
        for key in ("user", "role")
        if selinux.get(key) not in (None, "")
    ]
    host_process = mapping(context.get("windowsOptions")).get("hostProcess")
    if host_process not in (None, False):
        problems.append(_got(f"{path}.windowsOptions.hostProcess", host_process, "false or unset"))
    return problems


def _probe_host_problems(container: Mapping[str, Any], path: str) -> list[str]:
    """Probes and lifecycle hooks the kubelet sends from the node: to the Pod's own address only (baseline since
    Kubernetes 1.34; a ``host`` has the kubelet send requests, from the node, to anything the node reaches)."""
    handlers = [(name, container.get(name)) for name in ("livenessProbe", "readinessProbe", "startupProbe")]
    lifecycle = mapping(container.get("lifecycle"))
    handlers += [(f"lifecycle.{name}", lifecycle.get(name)) for name in ("postStart", "preStop")]
    return [
        _got(f"{path}.{name}.{action}.host", mapping(handler)[action].get("host"), "unset (the Pod's own address)")
        for name, handler in handlers
        for action in ("httpGet", "tcpSocket")
        if isinstance(mapping(handler).get(action), Mapping) and mapping(handler)[action].get("host") not in (None, "")
    ]


def container_baseline_problems(container: Any, path: str) -> list[str]:
    """What in one container (at field path ``path``) the baseline level forbids."""
    if not isinstance(container, Mapping):
        return [_got(path, container, "a container object")]
    context = mapping(container.get("securityContext"))
    where = f"{path}.securityContext"
    problems = _context_problems(context, where)
    if context.get("privileged") not in (None, False):
        problems.append(_got(f"{where}.privileged", context.get("privileged"), "false or unset"))
    added = mapping(context.get("capabilities")).get("add")
    if added:
        problems.append(_got(f"{where}.capabilities.add", added, "none (an exempt Pod adds no capabilities)"))
    if context.get("procMount") not in (None, "Default"):
        problems.append(_got(f"{where}.procMount", context.get("procMount"), "Default or unset"))
    problems += _probe_host_problems(container, path)
    for index, port in enumerate(items(container.get("ports"))):
        host_port = mapping(port).get("hostPort")
        if host_port not in (None, 0):
            problems.append(_got(f"{path}.ports[{index}].hostPort", host_port, "0 or unset (no port on the node)"))
    return problems


def baseline_problems(template: Mapping[str, Any], where: str = "") -> list[str]:
    """What in a Pod (or pod template: ``metadata`` and ``spec``) the baseline level forbids; empty when nothing."""
    spec = mapping(template.get("spec"))
    path = f"{where}spec"
    problems = [
        _got(f"{path}.{key}", spec[key], "false or unset (the Pod's own namespaces)")
        for key in ("hostNetwork", "hostPID", "hostIPC")
        if spec.get(key) not in (None, False)
    ]
    problems += [
        f"{path}.volumes[{index}].hostPath: volume {mapping(volume).get('name')!r} mounts the node's files, "
        "expected no hostPath volume"
        for index, volume in enumerate(items(spec.get("volumes")))
        if "hostPath" in mapping(volume)
    ]
    context = mapping(spec.get("securityContext"))
    problems += _context_problems(context, f"{path}.securityContext")
    for index, sysctl in enumerate(items(context.get("sysctls"))):
        name = mapping(sysctl).get("name")
        if name not in _SAFE_SYSCTLS:
            problems.append(_got(f"{path}.securityContext.sysctls[{index}].name", name, "one of baseline's safe ones"))
    for container, where_container in containers(spec, path):
        problems += container_baseline_problems(container, where_container)
    annotations = mapping(mapping(template.get("metadata")).get("annotations"))
    for key, value in annotations.items():
        if str(key).startswith(_APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or str(value).startswith("localhost/")
        ):
            problems.append(_got(f"{where}metadata.annotations[{key}]", value, "runtime/default or localhost/*"))
    return problems
