"""Second-round review of the operator deputy changes: what mallory still does with them (round 3).

The guards' PodMonitor keeps only Pods that wear a model's routing label, devmlops.io/model-deployment or
devmlops.io/canary-of, "which the webhook lets no other Pod wear". Prometheus does not read a Pod's label keys: its
Kubernetes discovery writes ``__meta_kubernetes_pod_labelpresent_<key>`` with every character that is no letter,
digit or '_' made '_', so ``devmlops-io/model-deployment`` or ``devmlops_io_model_deployment`` (keys of no meaning to
the webhook) read exactly as the model's own. Each test here failed before its fix; docstrings say what the attack
was, the assertions what holds.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.core.render import GUARD_CONTAINER, GUARD_METRICS_PORT, MANAGED_BY
from tests.integration.attacks.conftest import (
    BENIGN,
    Served,
    container,
    create_workload,
    denied,
    installed_exemption,
    pod,
    workload,
)
from tests.integration.attacks.test_pods import TOOLBOX, toolbox_exemption

# Label keys Prometheus reads as devmlops.io/model-deployment or devmlops.io/canary-of (its sanitizing), the first a
# key with another prefix, the second one with no prefix at all, the third with dots where the real one has '-'.
LOOKALIKES = ("devmlops-io/model-deployment", "devmlops_io_model_deployment", "devmlops.io/canary.of")


def _dressed_as_a_guard() -> dict[str, Any]:
    """A Pod spec like a Triton model's guard, as the PodMonitor reads one: a container devmlops-guard with a port
    "metrics" (mallory's own image: it reports whatever figures she likes for a model's digest)."""
    guard = container(GUARD_CONTAINER, BENIGN, ports=[{"name": "metrics", "containerPort": GUARD_METRICS_PORT}])
    return {"containers": [guard]}


@pytest.mark.parametrize("key", LOOKALIKES)
def test_a_pod_wearing_a_label_prometheus_reads_as_a_models_routing_label_is_denied_outside_enforcement(
    mallory: k8s.ApiClient, plain_namespace: str, key: str
) -> None:
    """Mallory, editor of a namespace no cluster admin put under enforcement (the PodMonitor watches every namespace
    by default; a team's model may be served there, and the analysis selects by namespace, model and digest), runs a
    Pod dressed as a guard with the managed-by label and ``key``: the webhook was never asked (no routing label by
    its key), and Prometheus scraped it as a model's Pod, so its figures for the model's digest counted in the
    rollout analysis and the drift reading. Before this review, admitted."""
    labels = {**MANAGED_BY, key: "fraud"}
    body: Any = pod("guard-impostor", _dressed_as_a_guard(), labels=labels)
    message = denied(k8s.CoreV1Api(mallory).create_namespaced_pod, plain_namespace, body)
    assert key in message


def test_a_deployment_whose_pods_wear_such_a_label_is_denied_outside_enforcement(
    mallory: k8s.ApiClient, plain_namespace: str
) -> None:
    """The same Pods made by a Deployment of hers (its template wears the lookalike key)."""
    body = workload("Deployment", "guard-impostor", _dressed_as_a_guard())
    body["spec"]["template"]["metadata"]["labels"].update({**MANAGED_BY, LOOKALIKES[0]: "fraud"})
    denied(create_workload, mallory, plain_namespace, body)


def test_an_exempt_pod_wearing_such_a_label_is_denied_in_the_models_own_namespace(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """Under enforcement, in the served model's own namespace: the cluster admin exempted a toolbox image for it, and
    mallory's exempt Pod wore ``devmlops-io/model-deployment`` (not under the devmlops.io/ prefix an exempt Pod may
    not wear) with a guard's container name and port. Before this review, admitted: scraped with the namespace, model
    and digest the analysis selects."""
    namespace = served_triton.namespace
    with installed_exemption(admin, toolbox_exemption([namespace])):
        spec: Any = {
            "serviceAccountName": "toolbox",
            "containers": [
                container(GUARD_CONTAINER, TOOLBOX, ports=[{"name": "metrics", "containerPort": GUARD_METRICS_PORT}])
            ],
        }
        labels = {**MANAGED_BY, LOOKALIKES[0]: served_triton.model_deployment["metadata"]["name"]}
        message = denied(
            k8s.CoreV1Api(mallory).create_namespaced_pod, namespace, pod("guard-impostor", spec, labels=labels)
        )
        assert LOOKALIKES[0] in message
