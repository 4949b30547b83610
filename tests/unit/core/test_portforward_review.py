"""Security review: ``kubectl port-forward`` walks around the serving guard (docs/threat-model.md property 11).

Behind a guard, Triton listens on the Pod's loopback only (``--http-address=127.0.0.1 --http-port=8080``), and
property 11 says nothing in the cluster reaches it but through the guard. A port-forward is the exception: the
kubelet/CRI dials the port from inside the Pod's network namespace, so ``kubectl port-forward pod/<p> 8080`` reaches
Triton's loopback listener directly, with no rate limit, schema, prompt or output check and no audit line. The
built-in ``edit`` ClusterRole a namespace editor normally holds grants ``pods/portforward``. devmlops treats exec
and attach as break-glass (CONNECT reviewed, denied without a ClusterBreakGlass) but never registers or denies
``pods/portforward``. Both tests fail on e8db94b."""

from __future__ import annotations

from devmlops.core.exemptions import compile_break_glass
from devmlops.core.workloads import review_serving
from devmlops.webhook.registration import VALIDATING_ENTRIES
from tests.unit.core.test_workloads import ENFORCED, NOW, evidence, request


def test_the_webhook_is_sent_pod_port_forwards_in_enforced_namespaces() -> None:
    connect = {
        resource
        for entry in VALIDATING_ENTRIES
        for rule in entry.rules
        if "CONNECT" in rule.operations
        for resource in rule.resources
    }
    assert "pods/exec" in connect  # as today
    assert "pods/portforward" in connect, "a port-forward to a guarded Pod is never reviewed"


def test_a_port_forward_needs_a_break_glass_like_exec() -> None:
    glass = compile_break_glass(
        {
            "metadata": {"name": "incident-7"},
            "spec": {"namespaces": ["ml"], "users": ["oncall"], "expires": "2026-12-01T00:00:00Z", "reason": "INC-7"},
        }
    )
    req = request(None, resource="pods", user="mallory", operation="CONNECT", sub="portforward",
                  kind="PodPortForwardOptions")  # fmt: skip
    decision = review_serving(req, evidence(labels=ENFORCED, break_glass=(glass,)), now=NOW)
    assert not decision.allowed, decision.message
