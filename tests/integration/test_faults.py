"""Faults through the real control plane: bursts, a webhook restarted under load, OPA killed mid-stream.
Invariant: every request is answered, nothing that should be denied is admitted. Every loop is bounded in count
and time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client
from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    eventually,
    model_deployment,
    signed_by_evidence,
    signed_model,
    trusting,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("faults"), "fraud")


@pytest.fixture
def trusted(admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel) -> Iterator[str]:
    spec = {"rego": {"packages": ["devmlops.licenses"]}}
    with trusting(admin, stack, namespace, model, policy=f"faults-{namespace}", **spec):
        yield namespace


def attempt(cp: ControlPlane, namespace: str, doc: dict[str, Any]) -> int:
    """Create once; return the HTTP status (201 admitted, 403 denied, 500 webhook unreachable: fail closed)."""
    with api_client(cp.kubeconfig()) as client:
        try:
            k8s.CustomObjectsApi(client).create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modeldeployments", doc
            )
        except ApiException as exc:
            return int(exc.status)
    return 201


def signed(name: str, model: SignedModel) -> dict[str, Any]:
    return signed_by_evidence(name, model)


def test_a_burst_of_200_from_50_parallel_clients_is_answered_correctly(
    control_plane: ControlPlane, trusted: str, model: SignedModel
) -> None:
    docs = [
        signed(f"good-{i}", model) if i % 2 == 0 else model_deployment(f"bad-{i}", model.digest) for i in range(200)
    ]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda d: attempt(control_plane, trusted, d), docs))
    assert answers[0::2] == [201] * 100
    assert answers[1::2] == [403] * 100


def test_an_unsigned_model_is_never_admitted_while_the_webhook_restarts_under_load(
    control_plane: ControlPlane, stack: DevmlopsStack, trusted: str, model: SignedModel
) -> None:
    answers: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        for i in range(400):  # bounded in count ...
            if stop.is_set():
                break
            answers.append(attempt(control_plane, trusted, model_deployment(f"unsigned-{i}", model.digest)))

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(0.5)
    stack.restart_webhook()
    time.sleep(0.5)
    stop.set()
    worker.join(60)  # ... and in time
    assert answers
    assert 201 not in answers, "an unsigned model was admitted"
    assert set(answers) <= {403, 500}


def test_killing_opa_mid_stream_denies_instead_of_admitting(
    control_plane: ControlPlane, stack: DevmlopsStack, trusted: str, model: SignedModel
) -> None:
    assert stack.opa is not None
    port = stack.opa.port
    before = [attempt(control_plane, trusted, signed(f"before-{i}", model)) for i in range(5)]
    eventually(lambda: phase(control_plane, trusted, "before-0") == "Admitted", what="before-0 admitted")
    stack.opa.stop()
    try:
        during = [attempt(control_plane, trusted, signed(f"during-{i}", model)) for i in range(5)]
        # A policy change makes the operator re-decide every model at once: with OPA gone that is no verdict, so
        # the running model must stay admitted (not Degraded, not scaled to zero).
        with api_client(control_plane.kubeconfig()) as client:
            k8s.CustomObjectsApi(client).patch_cluster_custom_object(
                GROUP, VERSION, "clustermodelpolicies", f"faults-{trusted}"[:63], {"metadata": {"labels": {"t": "1"}}}
            )
        time.sleep(3)
        kept = phase(control_plane, trusted, "before-0")
    finally:
        stack.opa.start(port=port)
    assert before == [201] * 5
    assert during == [403] * 5, "with OPA gone, Rego-governed models must be denied"
    assert kept == "Admitted"


def phase(cp: ControlPlane, namespace: str, name: str) -> str:
    with api_client(cp.kubeconfig()) as client:
        body: Any = k8s.CustomObjectsApi(client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments", name
        )
    return str((body.get("status") or {}).get("phase") or "")


def test_after_an_api_server_restart_the_operator_resumes_without_duplicate_children(
    control_plane: ControlPlane, trusted: str, model: SignedModel
) -> None:
    def children() -> list[str]:
        with api_client(control_plane.kubeconfig()) as client:
            listing = k8s.CustomObjectsApi(client).list_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", trusted, "inferenceservices"
            )
        return sorted(item["metadata"]["name"] for item in listing["items"])

    assert attempt(control_plane, trusted, signed("before-restart", model)) == 201
    eventually(lambda: children() == ["before-restart"], what="first child")
    control_plane.restart_apiserver()
    assert attempt(control_plane, trusted, signed("after-restart", model)) == 201
    eventually(lambda: children() == ["after-restart", "before-restart"], timeout=60, what="child after the restart")
    time.sleep(2)  # room for a confused operator to create a duplicate
    assert children() == ["after-restart", "before-restart"]
