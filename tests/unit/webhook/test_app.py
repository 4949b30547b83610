from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devmlops.core.policy import PolicySet, compile_policy
from devmlops.core.review import AdmissionRequest
from devmlops.webhook import WebhookDeps, WebhookSettings, create_app
from devmlops.webhook.service import AdmissionService
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle

POLICY = compile_policy(
    {
        "metadata": {"name": "prod", "resourceVersion": "1"},
        "spec": {"authorities": [{"name": "release", "key": {"publicKey": "-----BEGIN PUBLIC KEY-----"}}]},
    }
)


class Lookup:
    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        return {"model.sig": bundle("release")} if (namespace, name) == ("ns", "sig") else None

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return {}

    def model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def approvals(self) -> list[dict[str, Any]]:
        return []

    def endpoint_slices(self, namespace: str, service: str) -> list[dict[str, Any]]:
        return []  # a new ModelDeployment's Service names: no slice waits under them

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None  # nor does a Service take them


SERVICE = AdmissionService(policies=lambda: PolicySet((POLICY,)), lookup=Lookup(), verifier=FakeVerifier())


STAMPED = {"devmlops.io/requested-by": "alice", "devmlops.io/requester-groups": "[]"}  # by the mutating webhook


def review(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "req-1",
            "kind": {"group": "devmlops.io", "version": "v1alpha1", "kind": "ModelDeployment"},
            "operation": "CREATE",
            "namespace": "ns",
            "name": "m",
            "userInfo": {"username": "alice"},
            "object": {"metadata": {"annotations": STAMPED}, **obj},
        },
    }


MODEL = {"name": "fraud", "uri": "s3://m/fraud", "digest": DIGEST}
SIGNED = {
    "spec": {
        "model": MODEL,
        "runtime": {"kind": "kserve"},
        "signature": {"configMapKeyRef": {"name": "sig", "key": "model.sig"}},
    }
}
UNSIGNED = {"spec": {"model": MODEL, "runtime": {"kind": "kserve"}}}


@pytest.fixture
def audit_lines() -> list[dict[str, Any]]:
    return []


def make_client(audit_lines: list[dict[str, Any]], **deps: Any) -> TestClient:
    settings = WebhookSettings(tls_cert=Path("unused.crt"), tls_key=Path("unused.key"), max_body_bytes=4096)
    deps.setdefault("decide", SERVICE.decide)
    return TestClient(create_app(settings, WebhookDeps(audit=audit_lines.append, **deps)))


def test_validate_admits_a_signed_model_and_writes_one_audit_line(audit_lines: list[dict[str, Any]]) -> None:
    response = make_client(audit_lines).post("/validate", json=review(SIGNED))
    assert response.status_code == 200
    body = response.json()["response"]
    assert (body["uid"], body["allowed"]) == ("req-1", True)
    assert body["auditAnnotations"]["signature.prod"].startswith("pass: OMS signature verified for release")
    assert len(audit_lines) == 1
    line = audit_lines[0]
    assert (line["allowed"], line["user"], line["mode"]) == (True, "alice", "enforce")
    assert (line["digest"], line["signer"]) == (DIGEST, "release")
    assert line["policyRevision"] == PolicySet((POLICY,)).revision


def test_the_audit_line_of_a_denial_names_the_digest_asked_for_and_no_signer(audit_lines: list[dict[str, Any]]) -> None:
    make_client(audit_lines).post("/validate", json=review(UNSIGNED))
    (line,) = audit_lines
    assert (line["allowed"], line["digest"], line["signer"]) == (False, DIGEST, "")
    assert line["policyRevision"] == PolicySet((POLICY,)).revision


def test_validate_denies_an_unsigned_model_with_the_reason(audit_lines: list[dict[str, Any]]) -> None:
    body = make_client(audit_lines).post("/validate", json=review(UNSIGNED)).json()["response"]
    assert body["allowed"] is False
    assert body["status"]["code"] == 403
    assert "spec.signature is missing" in body["status"]["message"]


def test_a_body_over_the_size_limit_is_denied_unread(audit_lines: list[dict[str, Any]]) -> None:
    huge = review({"spec": {"signature": {"inline": "x" * 10_000}}})
    response = make_client(audit_lines).post("/validate", content=json.dumps(huge))
    assert response.status_code == 413
    assert response.json()["response"]["allowed"] is False
    assert "larger than the limit of 4096 bytes" in response.json()["response"]["status"]["message"]


def test_a_body_that_is_not_json_is_denied(audit_lines: list[dict[str, Any]]) -> None:
    response = make_client(audit_lines).post("/validate", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["response"]["allowed"] is False


def test_a_malformed_review_with_a_uid_gets_a_denial_for_that_uid(audit_lines: list[dict[str, Any]]) -> None:
    body = review(SIGNED)
    body["request"]["operation"] = "MERGE"
    answer = make_client(audit_lines).post("/validate", json=body).json()["response"]
    assert answer["uid"] == "req-1"
    assert answer["allowed"] is False
    assert "request.operation" in answer["status"]["message"]


def test_an_internal_error_in_decide_fails_closed(audit_lines: list[dict[str, Any]]) -> None:
    def broken(_request: AdmissionRequest) -> Any:
        raise RuntimeError("boom")

    answer = make_client(audit_lines, decide=broken).post("/validate", json=review(SIGNED)).json()["response"]
    assert answer["allowed"] is False
    assert "internal error" in answer["status"]["message"]
    assert "boom" not in answer["status"]["message"]


def test_readyz_follows_the_readiness_dependency(audit_lines: list[dict[str, Any]]) -> None:
    assert make_client(audit_lines, ready=lambda: False).get("/readyz").status_code == 503
    assert make_client(audit_lines).get("/readyz").status_code == 200
    assert make_client(audit_lines).get("/healthz").status_code == 200


def test_metrics_count_requests_and_gate_results(audit_lines: list[dict[str, Any]]) -> None:
    client = make_client(audit_lines)
    client.post("/validate", json=review(UNSIGNED))
    client.post("/validate", json=review(SIGNED))
    text = client.get("/metrics").text
    assert (
        'devmlops_admission_requests_total{allowed="false",kind="ModelDeployment",mode="enforce",'
        'operation="CREATE"} 1.0' in text
    )
    assert 'devmlops_gate_results_total{gate="signature",result="fail"} 1.0' in text
    assert 'devmlops_gate_results_total{gate="signature",result="pass"} 1.0' in text
    assert 'devmlops_admission_duration_seconds_count{kind="ModelDeployment"} 2.0' in text


def test_the_audit_line_names_the_decision_but_never_the_evidence(audit_lines: list[dict[str, Any]]) -> None:
    body = review({"spec": {**SIGNED["spec"], "signature": {"inline": "SECRET-BUNDLE-CONTENT"}}})
    make_client(audit_lines).post("/validate", json=body, headers={"Authorization": "Bearer token-123"})
    (line,) = audit_lines
    text = json.dumps(line)
    assert "SECRET-BUNDLE-CONTENT" not in text
    assert "token-123" not in text
    assert set(line) == {
        "uid",
        "kind",
        "operation",
        "namespace",
        "name",
        "user",
        "allowed",
        "mode",
        "digest",
        "signer",
        "policyRevision",
        "dryRun",
        "gates",
        "latencyMs",
    }


def test_past_the_pending_limit_a_review_is_denied_at_once_instead_of_queueing(
    audit_lines: list[dict[str, Any]],
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    release, entered = threading.Event(), threading.Semaphore(0)

    def slow(request: AdmissionRequest) -> Any:
        entered.release()
        release.wait(10)
        return SERVICE.decide(request)

    settings = WebhookSettings(tls_cert=Path("unused.crt"), tls_key=Path("unused.key"), max_pending_decisions=2)
    app = create_app(settings, WebhookDeps(decide=slow, audit=audit_lines.append))
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(client.post, "/validate", json=review(SIGNED)) for _ in range(2)]
        assert entered.acquire(timeout=5)
        assert entered.acquire(timeout=5)
        shed = client.post("/validate", json=review(SIGNED)).json()["response"]
        release.set()
        answers = [future.result(timeout=10).json()["response"] for future in held]
    assert shed["allowed"] is False
    assert "webhook overloaded: 2 decisions already pending (fail closed)" in shed["status"]["message"]
    assert [a["allowed"] for a in answers] == [True, True]
    assert sum(1 for line in audit_lines if not line["allowed"]) == 1
