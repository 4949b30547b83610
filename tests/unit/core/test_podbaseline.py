"""core/podbaseline.py: what the Pod Security "baseline" level forbids, each finding named by its field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from devmlops.core.podbaseline import baseline_problems

IMAGE = "registry.local/tool@sha256:" + "1" * 64


def pod(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "initContainers": [{"name": "i0", "image": IMAGE}],
        "containers": [{"name": "c0", "image": IMAGE}],
        "ephemeralContainers": [{"name": "e0", "image": IMAGE}],
    }
    return {"metadata": {"name": "p"}, "spec": {**base, **spec}}


def context(obj: dict[str, Any], part: str, value: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    if part == "pod":
        obj["spec"]["securityContext"] = value
    else:
        obj["spec"][part][0]["securityContext"] = value
    return obj


def test_a_plain_pod_and_one_with_every_value_baseline_permits_have_no_problems() -> None:
    assert baseline_problems(pod()) == []
    allowed = context(
        pod(hostNetwork=False, hostPID=False, hostIPC=False),
        "pod",
        {
            "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
            "appArmorProfile": {"type": "RuntimeDefault"},
            "seLinuxOptions": {"type": "container_init_t", "level": "s0:c1,c2", "user": "", "role": ""},
            "windowsOptions": {"hostProcess": False, "runAsUserName": "x"},
            "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}],
        },
    )
    allowed["spec"]["containers"][0]["securityContext"] = {
        "privileged": False,
        "procMount": "Default",
        "capabilities": {"drop": ["ALL"], "add": []},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    allowed["spec"]["containers"][0]["ports"] = [{"containerPort": 80}, {"containerPort": 81, "hostPort": 0}]
    allowed["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/c0": "runtime/default",
        "container.apparmor.security.beta.kubernetes.io/i0": "localhost/my-profile",
        "unrelated": "unconfined",
    }
    assert baseline_problems(allowed) == []


@pytest.mark.parametrize("part", ["initContainers", "containers", "ephemeralContainers"])
@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"privileged": True}, "securityContext.privileged"),
        ({"capabilities": {"add": ["NET_BIND_SERVICE"]}}, "securityContext.capabilities.add"),
        ({"procMount": "Unmasked"}, "securityContext.procMount"),
        ({"seccompProfile": {"type": "Unconfined"}}, "securityContext.seccompProfile.type"),
        ({"appArmorProfile": {"type": "Unconfined"}}, "securityContext.appArmorProfile.type"),
        ({"seLinuxOptions": {"type": "spc_t"}}, "securityContext.seLinuxOptions.type"),
        ({"seLinuxOptions": {"user": "system_u"}}, "securityContext.seLinuxOptions.user"),
        ({"seLinuxOptions": {"role": "system_r"}}, "securityContext.seLinuxOptions.role"),
        ({"windowsOptions": {"hostProcess": True}}, "securityContext.windowsOptions.hostProcess"),
    ],
)
def test_every_container_kind_is_checked_and_the_finding_names_the_field(
    part: str, value: dict[str, Any], field: str
) -> None:
    problems = baseline_problems(context(pod(), part, value))
    assert len(problems) == 1
    assert problems[0].startswith(f"spec.{part}[0].{field}: got ")


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"seccompProfile": {"type": "Unconfined"}}, "seccompProfile.type"),
        ({"seccompProfile": {"type": "SomethingNew"}}, "seccompProfile.type"),  # unknown: refused
        ({"appArmorProfile": {"type": "Unconfined"}}, "appArmorProfile.type"),
        ({"seLinuxOptions": {"type": "unconfined_t"}}, "seLinuxOptions.type"),
        ({"seLinuxOptions": {"user": "root"}}, "seLinuxOptions.user"),
        ({"windowsOptions": {"hostProcess": "true"}}, "windowsOptions.hostProcess"),  # not False: refused
        ({"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}, "sysctls[0].name"),
        ({"sysctls": [{"name": "net.core.somaxconn", "value": "1"}]}, "sysctls[0].name"),
        ({"sysctls": [{"value": "1"}]}, "sysctls[0].name"),
    ],
)
def test_the_pods_own_security_context_is_checked(value: dict[str, Any], field: str) -> None:
    problems = baseline_problems(context(pod(), "pod", value))
    assert [p.split(": got ")[0] for p in problems] == [f"spec.securityContext.{field}"]


def test_host_namespaces_host_paths_and_host_ports_are_named_by_their_field() -> None:
    obj = pod(hostNetwork=True, hostPID=True, hostIPC=True, volumes=[{"name": "ok"}, {"name": "n", "hostPath": {}}])
    obj["spec"]["containers"][0]["ports"] = [{"containerPort": 80}, {"containerPort": 81, "hostPort": 81}]
    assert [p.split(": ")[0] for p in baseline_problems(obj)] == [
        "spec.hostNetwork",
        "spec.hostPID",
        "spec.hostIPC",
        "spec.volumes[1].hostPath",
        "spec.containers[0].ports[1].hostPort",
    ]


@pytest.mark.parametrize(
    ("field", "handler"),
    [
        ("livenessProbe", {"httpGet": {"host": "10.0.0.1", "port": 80}}),
        ("readinessProbe", {"tcpSocket": {"host": "kubernetes.default", "port": 443}}),
        ("startupProbe", {"httpGet": {"host": "169.254.169.254", "port": 80}}),
    ],
)
def test_probes_and_lifecycle_hooks_go_to_the_pods_own_address_only(field: str, handler: dict[str, Any]) -> None:
    action = next(iter(handler))
    obj = pod()
    obj["spec"]["containers"][0][field] = handler
    assert [p.split(": ")[0] for p in baseline_problems(obj)] == [f"spec.containers[0].{field}.{action}.host"]
    obj["spec"]["containers"][0][field] = {action: {**handler[action], "host": ""}}
    obj["spec"]["initContainers"][0]["lifecycle"] = {"preStop": {"tcpSocket": {"host": "10.0.0.2", "port": 1}}}
    assert [p.split(": ")[0] for p in baseline_problems(obj)] == [
        "spec.initContainers[0].lifecycle.preStop.tcpSocket.host"
    ]
    obj["spec"]["initContainers"][0]["lifecycle"] = {
        "postStart": {"exec": {"command": ["true"]}},
        "preStop": {"sleep": {"seconds": 1}},
    }
    assert baseline_problems(obj) == []


def test_the_legacy_apparmor_annotation_may_not_say_unconfined() -> None:
    obj = pod()
    key = "container.apparmor.security.beta.kubernetes.io/c0"
    for value in ("unconfined", "", "something-else"):
        obj["metadata"]["annotations"] = {key: value}
        assert baseline_problems(obj) == [
            f"metadata.annotations[{key}]: got {value!r}, expected runtime/default or localhost/*"
        ]


def test_a_pod_templates_findings_carry_the_templates_path_and_a_container_that_is_no_object_is_refused() -> None:
    template = context(pod(), "containers", {"privileged": True})
    template["metadata"]["annotations"] = {"container.apparmor.security.beta.kubernetes.io/c0": "unconfined"}
    assert [p.split(": ")[0] for p in baseline_problems(template, "spec.template.")] == [
        "spec.template.spec.containers[0].securityContext.privileged",
        "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/c0]",
    ]
    broken = pod()
    broken["spec"]["containers"] = ["c0"]
    assert baseline_problems(broken) == ["spec.containers[0]: got 'c0', expected a container object"]
