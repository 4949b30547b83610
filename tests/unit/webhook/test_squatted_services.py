"""A new ModelDeployment's Service names, read in every namespace (webhook/service.py: _squatted_services)."""

from __future__ import annotations

from typing import Any

from devmlops.core.policy import PolicySet
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.webhook.service import AdmissionService
from tests.support.lookups import EmptyCluster
from tests.unit.core.fakes import DIGEST, FakeVerifier


class Squatted(EmptyCluster):
    """A namespace without the enforce label where mallory's fraud-predictor (owned by nothing) already exists."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:  # type: ignore[override]
        self.reads.append(name)
        if name != "fraud-predictor":
            return None
        return {"metadata": {"name": name}, "spec": {"type": "ExternalName", "externalName": "x.example.com"}}


def create(runtime: str = "kserve") -> AdmissionRequest:
    model = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "team"},
        "spec": {"model": {"name": "fraud", "uri": "s3://m/fraud", "digest": DIGEST}, "runtime": {"kind": runtime}},
    }
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation="CREATE",
        namespace="team",
        name="fraud",
        username="alice",
        groups=(),
        object=model,
        old_object=None,
        sub_resource="",
        resource="modeldeployments",
    )


def test_outside_enforcement_a_service_under_a_new_models_name_is_found() -> None:
    """The core refuses such a model (gate address, naming the Service); the names were read under enforcement only,
    and mallory's ExternalName fraud-predictor in a namespace without the label became the new model's address."""
    cluster = Squatted()
    service = AdmissionService(policies=lambda: PolicySet(()), lookup=cluster, verifier=FakeVerifier())  # type: ignore[arg-type]
    assert service.evidence(create()).squatted_services == ("fraud-predictor",)
    assert {"fraud-predictor", "fraud-transformer", "fraud-explainer", "fraud-canary"} <= set(cluster.reads)
