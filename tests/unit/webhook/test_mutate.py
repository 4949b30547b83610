"""``/mutate``: the service looks up the ModelDeployment a new ModelApproval names, and the pure ``stamp_patch`` binds
the approval to it (uid and served spec) and to the approver's user and groups."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from devmlops.core.gates.requester import served_fingerprint
from devmlops.core.policy import PolicySet
from devmlops.core.review import AdmissionRequest
from devmlops.webhook import WebhookDeps, WebhookSettings, create_app
from devmlops.webhook.service import AdmissionService
from tests.unit.core.fakes import DIGEST, FakeVerifier

TARGET = {
    "metadata": {"name": "fraud", "uid": "uid-of-fraud", "annotations": {"devmlops.io/requested-by": "alice"}},
    "spec": {"model": {"name": "fraud", "uri": "s3://m/fraud", "digest": DIGEST}, "runtime": {"kind": "kserve"}},
}


class Lookup:
    def config_map(self, namespace: str, name: str) -> None:
        return None

    def secret(self, namespace: str, name: str) -> None:
        return None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return {}

    def model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return TARGET if (namespace, name) == ("ns", "fraud") else None

    def approvals(self) -> list[dict[str, Any]]:
        return []


def review(kind: str, obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "req-1",
            "kind": {"group": "devmlops.io", "version": "v1alpha1", "kind": kind},
            "operation": operation,
            "namespace": "ns",
            "name": "a",
            "userInfo": {"username": "bob", "groups": ["devmlops:approvers", "system:authenticated"]},
            "object": obj,
        },
    }


def client(**deps: Any) -> TestClient:
    settings = WebhookSettings(tls_cert=Path("unused.crt"), tls_key=Path("unused.key"), max_body_bytes=8192)
    service = AdmissionService(policies=PolicySet, lookup=Lookup(), verifier=FakeVerifier())
    deps.setdefault("stamp", service.stamp)
    return TestClient(create_app(settings, WebhookDeps(decide=service.decide, **deps)))


def patch_of(response: Any) -> list[dict[str, Any]]:
    body = response.json()["response"]
    assert body["allowed"] is True
    return list(json.loads(base64.b64decode(body["patch"])))


def test_a_new_approval_is_stamped_with_its_target_and_the_approvers_groups() -> None:
    approval = {
        "metadata": {"name": "a", "annotations": {"devmlops.io/approved-uid": "forged"}},
        "spec": {"modelDeployment": "fraud", "digest": DIGEST},
    }
    patch = patch_of(client().post("/mutate", json=review("ModelApproval", approval)))
    stamps = {op["path"].rsplit("/", 1)[-1].replace("~1", "/"): op["value"] for op in patch}
    assert stamps == {
        "devmlops.io/approved-by": "bob",
        "devmlops.io/approver-groups": '["devmlops:approvers","system:authenticated"]',
        "devmlops.io/approved-uid": "uid-of-fraud",
        "devmlops.io/approved-spec": served_fingerprint(TARGET),
    }


def test_a_stamping_error_refuses_the_request() -> None:
    def broken(_request: AdmissionRequest) -> list[dict[str, Any]]:
        raise RuntimeError("cache gone")

    body = client(stamp=broken).post("/mutate", json=review("ModelApproval", {"spec": {}})).json()["response"]
    assert body["allowed"] is False
    assert "fail closed" in body["status"]["message"]


def _denied_reason(response: Any) -> str:
    body = response.json()["response"]
    assert body["allowed"] is False
    return str(body["status"]["message"])


def test_a_tag_the_webhook_cannot_resolve_is_refused_naming_the_field() -> None:
    """Fail closed: without a registry client no tag becomes a digest, and the ModelDeployment is refused here
    rather than written with a tag; a reference outside the OCI grammar is refused before any registry is asked."""
    model = {"name": "fraud", "uri": "oci://r.io/models/fraud:1.0", "digest": DIGEST}
    doc = {"metadata": {"name": "fraud"}, "spec": {"model": model, "runtime": {"kind": "kserve"}}}
    reason = _denied_reason(client().post("/mutate", json=review("ModelDeployment", doc)))
    assert "registry gate: spec.model.uri: 'oci://r.io/models/fraud:1.0' names a tag and this webhook" in reason
    model["uri"] = "oci://r.io/models/../admin:1.0"
    reason = _denied_reason(client().post("/mutate", json=review("ModelDeployment", doc)))
    assert "spec.model.uri: got 'oci://r.io/models/../admin:1.0', expected oci://host/repository" in reason
