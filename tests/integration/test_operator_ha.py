"""HA: two operator replicas with kopf peering; the one with the higher priority acts, the other stands by and
takes over when the first goes away."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.harness.processes import ManagedProcess
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    child_exists,
    cluster_policy,
    eventually,
    evidence_config_map,
    from_config_map,
    installed_policy,
    model_deployment,
    signed_model,
)


@pytest.fixture
def replicas(stack: DevmlopsStack) -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    """Swap the standalone operator for two peering replicas; put it back afterwards."""
    assert stack.operator is not None
    stack.operator.stop()
    high = stack.operator_process("operator-high", priority=100)
    low = stack.operator_process("operator-low", priority=10)
    try:
        yield high, low
    finally:
        high.stop()
        low.stop()
        stack.start_operator()


def peer_priorities(admin: k8s.ApiClient) -> set[int]:
    try:
        peering = k8s.CustomObjectsApi(admin).get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", "devmlops"
        )
    except ApiException:
        return set()
    return {int(peer["priority"]) for peer in (peering.get("status") or {}).values()}


def test_the_higher_priority_replica_acts_and_the_other_takes_over_when_it_leaves(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    namespace: str,
    replicas: tuple[ManagedProcess, ManagedProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    high, low = replicas
    model: SignedModel = signed_model(tmp_path_factory.mktemp("ha"), "fraud")
    eventually(lambda: {10, 100} <= peer_priorities(admin), timeout=45, what="both replicas registered as peers")
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        namespace, evidence_config_map("evidence", namespace, {"model.sig": model.bundle})
    )
    api = k8s.CustomObjectsApi(admin)
    with installed_policy(admin, stack, cluster_policy(f"ha-{namespace}"[:63], namespace, model.key.public_pem)):
        doc = model_deployment("first", model.digest, signature=from_config_map("evidence", "model.sig"))
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", doc)
        eventually(lambda: child_exists(admin, namespace, "first"), timeout=45, what="child from the active replica")
        # The whole log: replicas started late in the suite also work through models left in namespaces that
        # earlier tests deleted (no namespace controller here), which pushes this line far from the tail.
        eventually(lambda: "InferenceService first created" in high.log_text(), timeout=10, what="the active log")
        assert "InferenceService first created" not in low.log_text()

        high.stop()
        eventually(lambda: 100 not in peer_priorities(admin), timeout=45, what="the active replica leaving")
        doc = model_deployment("second", model.digest, signature=from_config_map("evidence", "model.sig"))
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", doc)
        eventually(lambda: child_exists(admin, namespace, "second"), timeout=45, what="child from the standby")
        eventually(lambda: "InferenceService second created" in low.log_text(), timeout=10, what="the standby log")
