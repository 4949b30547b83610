from __future__ import annotations

from typing import Any

import pytest

from devmlops.core.model import Decision, GateResult
from devmlops.core.review import build_response, parse_review
from devmlops.errors import InvalidInputError


def review(**request: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "devmlops.io", "version": "v1alpha1", "kind": "ModelDeployment"},
        "operation": "CREATE",
        "namespace": "team-a",
        "name": "m",
        "userInfo": {"username": "alice", "groups": ["devs"]},
        "object": {"spec": {}},
    }
    base.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}


def test_a_well_formed_review_is_read_with_user_and_kind() -> None:
    parsed = parse_review(review())
    assert (parsed.uid, parsed.kind.kind, parsed.operation) == ("u-1", "ModelDeployment", "CREATE")
    assert (parsed.username, parsed.groups, parsed.namespace) == ("alice", ("devs",), "team-a")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "expected a JSON object"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}, "apiVersion/kind"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, ".request"),
        (review(uid=7), "request.uid: got int, expected str"),
        (review(operation="PATCH"), "request.operation: got 'PATCH'"),
        (review(kind={"group": "x"}), "request.kind.version"),
        (review(object=[1]), "request.object: got list"),
        (review(userInfo={"groups": "admins"}), "request.userInfo.groups"),
    ],
)
def test_a_malformed_review_names_the_field_that_is_wrong(body: object, field: str) -> None:
    with pytest.raises(InvalidInputError, match=None) as caught:
        parse_review(body)
    assert field in caught.value.user_message


def test_a_denial_response_carries_403_the_message_and_audit_annotations() -> None:
    decision = Decision((GateResult(gate="signature", outcome="fail", reason="no bundle", hint="sign it"),))
    response = build_response(decision, "u-9")["response"]
    assert response["uid"] == "u-9"
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 403,
        "reason": "Forbidden",
        "message": "denied by devmlops: signature gate: no bundle; fix: sign it",
    }
    assert response["auditAnnotations"] == {"signature.request": "fail: no bundle"}


def test_warn_mode_failures_admit_and_come_back_as_warnings() -> None:
    decision = Decision(
        (GateResult(gate="allowlist", outcome="fail", reason="uri not allowed", policy="prod", mode="warn"),)
    )
    response = build_response(decision, "u")["response"]
    assert response["allowed"] is True
    assert response["warnings"] == ["allowlist gate (policy prod): uri not allowed"]
    assert "status" not in response


def test_audit_annotation_keys_are_qualified_names_the_api_server_accepts() -> None:
    decision = Decision((GateResult(gate="rego", outcome="pass", reason="ok", policy="Team A/ü" + "x" * 80),))
    (key,) = build_response(decision, "u")["response"]["auditAnnotations"]
    assert len(key) <= 63
    assert key.replace("-", "").replace(".", "").replace("_", "").isalnum()


def test_results_sharing_an_audit_key_are_joined_with_the_deny_first() -> None:
    decision = Decision(
        (
            GateResult(gate="rego", policy="prod", outcome="pass", reason="devmlops.licenses: no deny"),
            GateResult(gate="rego", policy="prod", outcome="fail", reason="devmlops.eu_ai_act: risk file missing"),
        )
    )
    annotations = build_response(decision, "u")["response"]["auditAnnotations"]
    assert annotations == {
        "rego.prod": "fail: devmlops.eu_ai_act: risk file missing | pass: devmlops.licenses: no deny"
    }
