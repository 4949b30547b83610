"""The effective risk tier (issue 13, property 8), in the pure core: the highest of the label, the SBOM's stated
risk and the policies' minimumTier, used alike by the compliance gate, the approval gate, the approval review and
the Rego input."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from devmlops.core.approvalreview import review_approval
from devmlops.core.decision import decide
from devmlops.core.evidence import ApprovalState, Document, Evidence
from devmlops.core.gates.approval import approval_required
from devmlops.core.gates.compliance import EffectiveTier, check_compliance, effective_tier
from devmlops.core.gates.rego import rego_input
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.mutation import stamp_patch
from devmlops.core.policy import Policy, PolicySet, compile_model_policy, compile_policy
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.core.sbom import MODEL_KIND, SbomComponent, SbomSummary
from devmlops.errors import InvalidInputError
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle, md_update

PEM = "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----"
# These tests are about tiers and approval: the evidence the high tier demands by default is waived here
# (tests/unit/core/test_evidence_gate.py covers it).
TIERS = {"prohibited": {"deny": True}, "high": {"requireApproval": True, "requiredEvidence": []}}


def policy(name: str = "eu", **compliance: Any) -> Policy:
    rules = {"approvers": {"groups": ["approvers"]}, "tiers": TIERS, **compliance}
    return compile_policy(
        {
            "metadata": {"name": name},
            "spec": {"authorities": [{"name": "k", "key": {"publicKey": PEM}}], "compliance": rules},
        }
    )


def model(label: str | None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "fraud",
            "namespace": "ml",
            "uid": "uid-1",
            "labels": {"devmlops.io/eu-ai-act-risk": label} if label else {},
            "annotations": {"devmlops.io/requested-by": "alice"},
        },
        "spec": {
            "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
            "runtime": {"kind": "kserve"},
            "signature": {"inline": bundle("k")},
        },
    }


def sbom(*risks: str) -> SbomSummary:
    return SbomSummary(
        format="spdx",
        spec_version="3.0.1",
        components=tuple(SbomComponent(name=f"m{i}", kind=MODEL_KIND, risk=r) for i, r in enumerate(risks)),
    )


@pytest.mark.parametrize(
    ("label", "risks", "minimum", "expected"),
    [
        ("minimal", (), "", "minimal"),
        ("minimal", (), "high", "high"),
        ("high", (), "limited", "high"),  # a label can raise the tier
        (None, (), "limited", "limited"),
        ("minimal", ("serious",), "", "high"),
        ("limited", ("low", "medium"), "", "limited"),
        ("extreme", (), "", ""),  # not a tier: it raises nothing (and the compliance gate refuses it)
        ("minimal", ("unheard-of",), "", "minimal"),
        ("prohibited", ("low",), "high", "prohibited"),
    ],
)
def test_the_effective_tier_is_the_highest_of_label_sbom_and_policy(
    label: str | None, risks: tuple[str, ...], minimum: str, expected: str
) -> None:
    policies = [policy(minimumTier=minimum)] if minimum else [policy()]
    assert effective_tier(model(label), policies, sbom(*risks)).tier == expected


def test_the_tier_says_where_it_came_from() -> None:
    team = compile_model_policy(
        {"metadata": {"name": "raise", "namespace": "ml"}, "spec": {"compliance": {"minimumTier": "prohibited"}}}
    )
    tier = effective_tier(model("minimal"), [policy(minimumTier="high"), team], sbom("serious"))
    assert tier.describe() == (
        "prohibited (label 'minimal'; SBOM model 'm0' safetyRiskAssessment 'serious' states 'high'; "
        "'prohibited' assigned by ModelPolicy ml/raise)"
    )
    assert effective_tier(model("high"), [policy()], None).describe() == "high"


def test_a_minimum_tier_that_is_no_tier_does_not_compile() -> None:
    with pytest.raises(InvalidInputError, match=r"spec.compliance.minimumTier: found 'severe', expected 'minimal'"):
        policy(minimumTier="severe")


def test_the_compliance_gate_judges_the_effective_tier() -> None:
    assigned = policy(minimumTier="prohibited")
    denied = check_compliance(
        parse_model_deployment(model("minimal")), assigned, effective_tier(model("minimal"), [assigned], None)
    )
    assert denied.outcome == "fail"
    assert denied.reason == (
        "risk tier prohibited (label 'minimal'; 'prohibited' assigned by ClusterModelPolicy eu): "
        "the policy never admits this tier"
    )
    raised = policy(minimumTier="high")
    waiting = check_compliance(
        parse_model_deployment(model("minimal")), raised, effective_tier(model("minimal"), [raised], None)
    )
    assert waiting.outcome == "pass"
    assert waiting.reason == (
        "risk tier high: the policy's demands are met (served only after a ModelApproval by a second person); "
        "the label does not lower it: the tier is high (label 'minimal'; 'high' assigned by ClusterModelPolicy eu)"
    )


def test_a_required_label_is_still_required_when_the_tier_comes_from_elsewhere() -> None:
    assigned = policy(minimumTier="high")
    result = check_compliance(
        parse_model_deployment(model(None)), assigned, effective_tier(model(None), [assigned], None)
    )
    assert result.outcome == "fail"
    assert "label devmlops.io/eu-ai-act-risk is missing" in result.reason
    assert "(the effective tier would be high (no label; 'high' assigned by ClusterModelPolicy eu))" in result.reason


def test_approval_is_required_by_the_effective_tier_not_the_label() -> None:
    assert approval_required(policy(), EffectiveTier(tier="high", label="minimal", assigned="high"))
    assert not approval_required(policy(), EffectiveTier(tier="minimal", label="minimal"))
    assert not approval_required(policy(), EffectiveTier(tier=""))


def serving_request(obj: dict[str, Any]) -> AdmissionRequest:
    return md_update(obj, obj, user="devmlops-operator")


def test_a_model_labelled_minimal_that_its_policy_assigns_high_is_not_served_without_approval() -> None:
    policies = PolicySet((policy(minimumTier="high", requireRiskLabel=False),))
    evidence = Evidence(signatures=(Document("spec.signature.inline", text=bundle("k")),))
    for label in ("minimal", None):
        decision = decide(serving_request(model(label)), policies, evidence, FakeVerifier(), stage="serving")
        assert not decision.allowed
        assert [r.gate for r in decision.results if r.blocking] == ["approval"]
        approved = dataclasses.replace(
            evidence, approval=ApprovalState(approved=True, approver="bob", name="a", groups=("approvers",))
        )
        assert decide(serving_request(model(label)), policies, approved, FakeVerifier(), stage="serving").allowed


def approval_for(target: dict[str, Any]) -> AdmissionRequest:
    request = AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelApproval"),
        operation="CREATE",
        namespace="ml",
        name="a",
        username="bob",
        groups=("approvers",),
        object={"metadata": {"name": "a"}, "spec": {"modelDeployment": "fraud", "digest": DIGEST}},
        old_object=None,
    )
    (patch,) = stamp_patch(request, target=target)
    return dataclasses.replace(request, object={**(request.object or {}), "metadata": {"annotations": patch["value"]}})


def test_the_approval_review_accepts_an_approval_the_effective_tier_requires() -> None:
    target = model("minimal")
    assigned = review_approval(approval_for(target), target, [policy(minimumTier="high")], now="2026-11-30T00:00:00Z")
    assert assigned.allowed, assigned.message
    stated = review_approval(approval_for(target), target, [policy()], now="2026-11-30T00:00:00Z", sbom=sbom("high"))
    assert stated.allowed, stated.message
    nothing = review_approval(approval_for(target), target, [policy()], now="2026-11-30T00:00:00Z")
    assert "nothing to approve" in nothing.message


def test_rego_sees_the_effective_tier() -> None:
    obj = model("minimal")
    tier = effective_tier(obj, [policy(minimumTier="high")], None)
    document = rego_input(serving_request(obj), obj, policy(), Evidence(), None, stage="admission", tier=tier)
    assert document["compliance"] == {
        "tier": "high",
        "declaredTier": "minimal",
        "statedTier": "",
        "assignedTier": "high",
        "labels": {"devmlops.io/eu-ai-act-risk": "minimal"},
    }


@pytest.mark.parametrize("lowered", ["minimal", None])
def test_an_edit_that_lowers_or_removes_the_risk_label_is_denied(lowered: str | None) -> None:
    policies = PolicySet((policy(),))
    decision = decide(
        md_update(model("high"), model(lowered)), policies, Evidence(requester_stamped=True), FakeVerifier()
    )
    assert not decision.allowed
    assert "a label can raise a tier, never lower it" in decision.message
    raised = decide(
        md_update(model("limited"), model("high")), policies, Evidence(requester_stamped=True), FakeVerifier()
    )
    assert "never lower" not in raised.message


def test_a_scale_down_that_also_lowers_the_label_is_decided_in_full() -> None:
    old, new = model("high"), model("minimal")
    old["spec"]["runtime"]["replicas"], new["spec"]["runtime"]["replicas"] = 3, 1
    decision = decide(md_update(old, new), PolicySet((policy(),)), Evidence(requester_stamped=True), FakeVerifier())
    assert "never lower" in decision.message
    same = model("high")
    same["spec"]["runtime"]["replicas"] = 1
    assert decide(md_update(old, same), PolicySet((policy(),)), Evidence(), FakeVerifier()).allowed
