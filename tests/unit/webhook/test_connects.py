"""The webhook's evidence for an exec, attach or port-forward (webhook/service.py): sent from every namespace with no
Pod (webhook/registration.py), decided by the namespace as the API server has it and by the Pod it opens."""

from __future__ import annotations

from typing import Any

from devmlops.core.policy import PolicySet
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.webhook.service import AdmissionService
from tests.unit.core.fakes import FakeVerifier

MODEL_POD = {"metadata": {"name": "fraud-1", "labels": {"devmlops.io/model-deployment": "fraud"}}}
SHELL_POD = {"metadata": {"name": "shell", "labels": {"app": "shell"}}}


class Cluster:
    def __init__(self, *, cached: dict[str, str], now: dict[str, str]) -> None:
        self.cached, self.now = cached, now
        self.pods = {"fraud-1": MODEL_POD, "shell": SHELL_POD}
        self.reads: list[str] = []

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return self.cached

    def namespace_labels_now(self, namespace: str) -> dict[str, str]:
        self.reads.append(f"namespace {namespace}")
        return self.now

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"pod {namespace}/{name}")
        return self.pods.get(name)

    def exemptions(self) -> tuple[()]:
        return ()

    def break_glass(self) -> tuple[()]:
        return ()


def connect(pod: str, sub: str = "exec") -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("", "v1", "PodExecOptions"),
        operation="CONNECT",
        namespace="team",
        name=pod,
        username="mallory",
        groups=(),
        object={"kind": "PodExecOptions", "command": ["sh"]},
        old_object=None,
        sub_resource=sub,
        resource="pods",
    )


def service(cluster: Cluster) -> AdmissionService:
    return AdmissionService(policies=lambda: PolicySet(()), lookup=cluster, verifier=FakeVerifier())  # type: ignore[arg-type]


def test_outside_enforcement_the_pod_a_connect_opens_decides() -> None:
    cluster = Cluster(cached={}, now={})
    for sub in ("exec", "attach", "portforward"):
        refused = service(cluster).decide(connect("fraud-1", sub))
        assert not refused.allowed
        assert "devmlops.io/model-deployment" in refused.message
        assert service(cluster).decide(connect("shell", sub)).allowed
        assert service(cluster).decide(connect("gone", sub)).allowed  # the API server answers 404 after admission
    assert "pod team/fraud-1" in cluster.reads


def test_a_namespace_labelled_a_moment_ago_is_enforced_though_the_cache_has_not_seen_it() -> None:
    cluster = Cluster(cached={}, now={"devmlops.io/enforce": "true"})
    assert not service(cluster).decide(connect("shell")).allowed
    assert cluster.reads == ["namespace team"]  # no Pod read under enforcement: every Pod there needs a break-glass


def test_under_enforcement_nothing_more_is_read() -> None:
    cluster = Cluster(cached={"devmlops.io/enforce": "true"}, now={})
    assert not service(cluster).decide(connect("shell")).allowed
    assert cluster.reads == []
