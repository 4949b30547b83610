"""The compliance gate, ModelApproval review, requester stamping and team-policy narrowing, in the pure core."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from devmlops.core.approvalreview import review_approval
from devmlops.core.gates.compliance import check_compliance, effective_tier
from devmlops.core.gates.requester import check_requester
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import GateResult
from devmlops.core.mutation import stamp_patch
from devmlops.core.narrowing import widenings
from devmlops.core.policy import compile_policy
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.core.sbom import SbomComponent, SbomSummary

PEM = "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----"
DIGEST = "sha256:" + "ab" * 32
COMPLIANCE = {
    "approvers": {"groups": ["approvers"], "users": ["dana"]},
    "tiers": {
        "prohibited": {"deny": True},
        "high": {"requireApproval": True, "requiredAnnotations": ["devmlops.io/dpia"]},
    },
}
POLICY = compile_policy(
    {
        "metadata": {"name": "eu"},
        "spec": {
            "authorities": [{"name": "k", "key": {"publicKey": PEM}}],
            "compliance": COMPLIANCE,
            "allow": {"storageUris": ["s3://models/**"], "runtimes": ["kserve"]},
            "sbom": {"required": True},
        },
    }
)


def md(tier: str | None, annotations: dict[str, str] | None = None, requester: str = "alice") -> dict[str, Any]:
    labels = {"devmlops.io/eu-ai-act-risk": tier} if tier else {}
    return {
        "metadata": {
            "name": "fraud",
            "labels": labels,
            "annotations": {"devmlops.io/requested-by": requester, **(annotations or {})},
        },
        "spec": {
            "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
            "runtime": {"kind": "kserve"},
        },
    }


def comply(obj: dict[str, Any], sbom: SbomSummary | None = None) -> GateResult:
    """The compliance gate under POLICY alone, at the effective tier."""
    return check_compliance(parse_model_deployment(obj), POLICY, effective_tier(obj, [POLICY], sbom))


def test_the_risk_label_is_required_and_must_be_a_known_tier() -> None:
    assert "label devmlops.io/eu-ai-act-risk is missing" in comply(md(None)).reason
    assert "got 'extreme'" in comply(md("extreme")).reason


def test_tier_demands_come_from_policy() -> None:
    assert comply(md("prohibited")).outcome == "fail"
    missing = comply(md("high"))
    assert "annotation(s) devmlops.io/dpia missing" in missing.reason
    ok = comply(md("high", {"devmlops.io/dpia": "https://dpia"}))
    assert ok.outcome == "pass"
    assert "served only after a ModelApproval" in ok.reason
    assert comply(md("minimal")).outcome == "pass"


def test_a_label_lower_than_the_sboms_risk_assessment_does_not_lower_the_tier() -> None:
    # Before issue 13 this was refused; now the SBOM's stated risk counts as the tier (property 8).
    summary = SbomSummary(
        format="spdx",
        spec_version="3.0.1",
        components=(SbomComponent(name="m", kind="machine-learning-model", risk="high"),),
    )
    result = comply(md("limited"), summary)
    assert result.outcome == "fail"
    assert result.reason == (
        "risk tier high (label 'limited'; SBOM model 'm' safetyRiskAssessment 'high' states 'high'): "
        "annotation(s) devmlops.io/dpia missing"
    )
    ok = comply(md("limited", {"devmlops.io/dpia": "https://dpia"}), summary)
    assert ok.outcome == "pass"
    assert "served only after a ModelApproval" in ok.reason


def approval_request(
    user: str, groups: tuple[str, ...], digest: str = DIGEST, target: dict[str, Any] | None = None, **spec: Any
) -> AdmissionRequest:
    """A ModelApproval CREATE as the validating webhook sees it: stamped by the mutating webhook for ``target``."""
    request = AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelApproval"),
        operation="CREATE",
        namespace="ml",
        name="a",
        username=user,
        groups=groups,
        old_object=None,
        object={"metadata": {"name": "a"}, "spec": {"modelDeployment": "fraud", "digest": digest, **spec}},
    )
    (patch,) = stamp_patch(request, target=target if target is not None else md("high"))
    assert request.object is not None
    return replace(request, object={**request.object, "metadata": {"name": "a", "annotations": patch["value"]}})


def test_an_approval_needs_a_named_approver_who_is_not_the_requester_for_the_current_digest() -> None:
    now = "2026-11-26T12:00:00+00:00"
    target = md("high")
    assert review_approval(approval_request("bob", ("approvers",)), target, [POLICY], now=now).allowed
    assert review_approval(approval_request("dana", ()), target, [POLICY], now=now).allowed
    own = review_approval(approval_request("alice", ("approvers",)), target, [POLICY], now=now)
    assert "a second person must approve" in own.message
    outsider = review_approval(approval_request("eve", ("devs",)), target, [POLICY], now=now)
    assert "is not an approver under eu" in outsider.message
    stale = review_approval(
        approval_request("bob", ("approvers",), digest="sha256:" + "cd" * 32), target, [POLICY], now=now
    )
    assert "spec.digest" in stale.message
    expired = review_approval(
        approval_request("bob", ("approvers",), expires="2026-11-01T00:00:00Z"), target, [POLICY], now=now
    )
    assert "already past" in expired.message
    assert "does not exist" in review_approval(approval_request("bob", ("approvers",)), None, [POLICY], now=now).message
    nothing = review_approval(
        approval_request("bob", ("approvers",), target=md("minimal")), md("minimal"), [POLICY], now=now
    )
    assert "nothing to approve" in nothing.message


def md_request(
    operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None, user: str = "alice"
) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation=operation,
        namespace="ml",
        name="fraud",
        username=user,
        groups=(),  # type: ignore[arg-type]
        object=obj,
        old_object=old,
    )


def test_the_requester_is_stamped_from_the_request_and_kept_on_metadata_only_updates() -> None:
    bare = {"metadata": {"name": "fraud"}, "spec": {"model": {"digest": DIGEST}}}
    assert stamp_patch(md_request("CREATE", bare)) == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {"devmlops.io/requested-by": "alice", "devmlops.io/requester-groups": "[]"},
        }
    ]
    forged = md("high", requester="bob")
    assert stamp_patch(md_request("CREATE", forged)) == [
        {"op": "add", "path": "/metadata/annotations/devmlops.io~1requested-by", "value": "alice"},
        {"op": "add", "path": "/metadata/annotations/devmlops.io~1requester-groups", "value": "[]"},
    ]
    assert check_requester(md_request("CREATE", forged)).blocking
    relabel = md_request("UPDATE", md("high", {"x": "1"}, requester="alice"), old=md("high"), user="operator")
    assert stamp_patch(relabel) == []
    assert check_requester(relabel).outcome == "pass"


def test_a_team_policy_that_widens_is_found_out() -> None:
    problems = widenings(
        {
            "allow": {"storageUris": ["s3://models/team/**", "gs://other/**"], "runtimes": ["triton"]},
            "sbom": {"required": False},
            "compliance": {"tiers": {"prohibited": {"deny": False}, "high": {"requireApproval": False}}},
        },
        [POLICY],
    )
    assert len(problems) == 5
    assert (
        problems[0]
        == "spec.allow.storageUris 'gs://other/**' is outside what ClusterModelPolicy eu allows ['s3://models/**']"
    )
    assert widenings({"allow": {"storageUris": ["s3://models/team/**"]}, "sbom": {"required": True}}, [POLICY]) == []
    assert widenings({"allow": {"s3Endpoints": ["minio.team.svc"]}}, [POLICY]) == [
        "spec.allow.s3Endpoints: only a ClusterModelPolicy allows S3 endpoints"
    ]


def test_an_approval_is_immutable_and_keeps_who_approved() -> None:
    original = {
        "metadata": {"annotations": {"devmlops.io/approved-by": "bob"}},
        "spec": {"modelDeployment": "fraud", "digest": DIGEST},
    }

    def update(new: dict[str, Any]) -> str:
        request = AdmissionRequest(
            uid="u",
            kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelApproval"),
            operation="UPDATE",
            namespace="ml",
            name="a",
            username="operator",
            groups=(),
            object=new,
            old_object=original,
        )
        return review_approval(request, md("high"), [POLICY], now="2026-11-26T00:00:00+00:00").message

    relabelled = {**original, "metadata": {**original["metadata"], "labels": {"team": "a"}}}
    assert update(relabelled) == "admitted by devmlops"
    assert "immutable" in update({**original, "spec": {"modelDeployment": "fraud", "digest": "sha256:" + "0" * 64}})
    forged = {**original, "metadata": {"annotations": {"devmlops.io/approved-by": "mallory"}}}
    assert "expected 'bob' (unchanged)" in update(forged)
