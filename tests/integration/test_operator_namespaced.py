"""An operator that watches only some namespaces (the chart's operator.watchNamespaces): it serves and re-checks the
ModelDeployments there and leaves every other namespace alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from devmlops.harness.processes import ManagedProcess
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    GROUP,
    VERSION,
    child_exists,
    eventually,
    md_status,
    operator_instead,
    signed_by_evidence,
    signed_model,
    trusting,
)


@pytest.fixture
def other_namespace(admin: k8s.ApiClient, namespace: str) -> Iterator[str]:
    name = f"{namespace[:56]}-other"
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def namespaced_operator(stack: DevmlopsStack, namespace: str) -> Iterator[ManagedProcess]:
    """Swap the cluster-wide operator for one that watches ``namespace`` only; put it back afterwards."""
    with operator_instead(stack, "operator-namespaced", namespaces=(namespace,)) as process:
        yield process


def test_a_namespaced_operator_serves_and_rechecks_its_namespace_and_leaves_others_alone(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    namespace: str,
    other_namespace: str,
    namespaced_operator: ManagedProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model = signed_model(tmp_path_factory.mktemp("watched"), "fraud")
    rotated = signed_model(tmp_path_factory.mktemp("rotated"), "fraud")
    api = k8s.CustomObjectsApi(admin)
    with (
        trusting(admin, stack, namespace, model, policy=f"watched-{namespace}") as watched,
        trusting(admin, stack, other_namespace, model, policy=f"unwatched-{namespace}"),
    ):
        for target in (namespace, other_namespace):
            api.create_namespaced_custom_object(
                GROUP, VERSION, target, "modeldeployments", signed_by_evidence("fraud", model)
            )
        eventually(lambda: child_exists(admin, namespace, "fraud"), what="the child in the watched namespace")
        # The status is written just after the child: wait for it rather than read it once.
        eventually(lambda: md_status(admin, namespace).get("phase") == "Admitted", what="the watched model Admitted")

        # A revoked key reaches the watched namespace through the re-check round, which lists only that namespace.
        name = watched["metadata"]["name"]
        policy = cast(dict[str, Any], api.get_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", name))
        policy["spec"]["authorities"] = [{"name": "rotated", "key": {"publicKey": rotated.key.public_pem}}]
        api.replace_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", name, policy)
        eventually(lambda: md_status(admin, namespace).get("phase") == "Degraded", what="Degraded by the re-check")

        assert md_status(admin, other_namespace) == {}
        assert not child_exists(admin, other_namespace, "fraud")
    assert "re-check failed" not in namespaced_operator.log_text()
    assert "Forbidden" not in namespaced_operator.log_text()
