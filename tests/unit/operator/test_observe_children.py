"""StoredChildren (the operator's Observer.children): the rendered children and the other runtime kind's under the
model's names, as stored, read through a fake dynamic client (no API server)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from devmlops.operator.observe import StoredChildren


class _Stored:
    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body

    def to_dict(self) -> dict[str, Any]:
        return self._body


class _Resource:
    def __init__(self, kind: str, stored: dict[tuple[str, str], dict[str, Any]]) -> None:
        self._kind, self._stored = kind, stored

    def get(self, *, name: str, namespace: str) -> _Stored:
        body = self._stored.get((self._kind, name))
        if body is None:
            raise ApiException(status=404)
        return _Stored(body)


class _Resources:
    def __init__(self, stored: dict[tuple[str, str], dict[str, Any]], served: set[str]) -> None:
        self._stored, self._served = stored, served
        self.asked: list[str] = []  # the kinds looked up, in order

    def get(self, *, api_version: str, kind: str) -> _Resource:
        self.asked.append(kind)
        if kind not in self._served:
            raise ResourceNotFoundError(f"No matches found for {{'api_version': '{api_version}', 'kind': '{kind}'}}")
        return _Resource(kind, self._stored)


class _Dynamic:
    def __init__(self, stored: dict[tuple[str, str], dict[str, Any]], served: set[str]) -> None:
        self.resources = _Resources(stored, served)


def _observer(stored: dict[tuple[str, str], dict[str, Any]], served: set[str]) -> StoredChildren:
    return StoredChildren(_Dynamic(stored, served))  # type: ignore[arg-type]


def _model(kind: str) -> dict[str, Any]:
    runtime: dict[str, Any] = {"kind": kind}
    if kind == "triton":
        runtime["image"] = "registry.local/triton@sha256:" + "1" * 64
    model = {"name": "fraud", "uri": "s3://models/fraud", "digest": "sha256:" + "ab" * 32}
    return {
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "md-uid", "generation": 1},
        "spec": {"model": model, "runtime": runtime},
    }


def test_a_model_switched_to_kserve_still_sees_its_triton_deployment() -> None:
    """Operator deputy review: the Triton Deployment of a model switched to KServe served on, unobserved."""
    deployment = {"kind": "Deployment", "metadata": {"name": "fraud"}}
    found = _observer({("Deployment", "fraud"): deployment}, {"Deployment", "Service", "InferenceService"}).read(
        _model("kserve")
    )
    assert found == {("Deployment", "fraud"): deployment}


def test_a_cluster_without_kserve_observes_a_triton_models_children() -> None:
    deployment = {"kind": "Deployment", "metadata": {"name": "fraud"}}
    service = {"kind": "Service", "metadata": {"name": "fraud"}}
    stored = {("Deployment", "fraud"): deployment, ("Service", "fraud"): service}
    found = _observer(stored, {"Deployment", "Service"}).read(_model("triton"))
    assert list(found) == [("Deployment", "fraud"), ("Service", "fraud")]


def test_a_kind_the_cluster_does_not_serve_is_not_asked_for_again_for_a_minute() -> None:
    """The dynamic client reloads the whole discovery for a kind it does not know: without KServe, every reconcile of
    a Triton model paid that for the InferenceService it looks for. Asked once, then again after a minute (KServe may
    have been installed since)."""
    clock = [0.0]
    dynamic = _Dynamic({}, {"Deployment", "Service"})
    children = StoredChildren(dynamic, clock=lambda: clock[0])  # type: ignore[arg-type]
    children.read(_model("triton"))
    children.read(_model("triton"))
    assert dynamic.resources.asked.count("InferenceService") == 1
    assert dynamic.resources.asked.count("Deployment") == 4  # served kinds are asked each time (fraud, fraud-canary)
    clock[0] = 61.0
    children.read(_model("triton"))
    assert dynamic.resources.asked.count("InferenceService") == 2
