"""The approval gate, where a model is served: a tier that requires approval needs a valid ModelApproval by a
second person for the ModelDeployment's current digest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.evidence import Evidence
from devmlops.core.gates import policy_result
from devmlops.core.gates.compliance import risk_tier
from devmlops.core.model import GateResult
from devmlops.core.policy import Policy

__all__ = ["GATE", "approval_required", "check_approval"]

GATE = "approval"


def approval_required(obj: Mapping[str, Any], policy: Policy) -> bool:
    rules = policy.compliance
    tier = rules.tiers.get(risk_tier(obj)) if rules else None
    return bool(tier and tier.require_approval)


def check_approval(obj: Mapping[str, Any], policy: Policy, evidence: Evidence) -> GateResult:
    if not approval_required(obj, policy):
        return policy_result(GATE, policy, "skip", f"risk tier {risk_tier(obj) or 'none'} needs no approval")
    approval = evidence.approval
    if approval is None or not approval.approved:
        digest = str(((obj.get("spec") or {}).get("model") or {}).get("digest") or "")
        return policy_result(
            GATE,
            policy,
            "fail",
            f"risk tier {risk_tier(obj)} requires a ModelApproval for {digest[:19]}... by a second person; "
            "none is valid",
            "ask an approver named by the policy to create a ModelApproval for this digest",
        )
    return policy_result(GATE, policy, "pass", f"approved by {approval.approver} ({approval.name})")
