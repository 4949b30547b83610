"""The approval gate, where a model is served: where the effective risk tier requires approval, a valid
ModelApproval (found by ``adapters.approvals.find_approval``: this uid, this digest and served spec, a second
person, not expired) whose approver this policy still names, by user or by the groups stamped when approving."""

from __future__ import annotations

from collections.abc import Sequence

from devmlops.core.evidence import Evidence
from devmlops.core.gates import policy_result
from devmlops.core.gates.compliance import EffectiveTier
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import Policy

__all__ = ["GATE", "approval_required", "check_approval", "refusing_approver"]

GATE = "approval"


def approval_required(policy: Policy, tier: EffectiveTier) -> bool:
    """Whether ``policy`` demands a ModelApproval at the effective ``tier`` (``effective_tier()``)."""
    rules = policy.compliance
    demands = rules.tiers.get(tier.tier) if rules and tier.tier else None
    return bool(demands and demands.require_approval)


def refusing_approver(
    policies: Sequence[Policy], tier: EffectiveTier, approver: str, groups: Sequence[str]
) -> list[str]:
    """The policies that demand approval at ``tier`` but do not name ``approver`` (or one of ``groups``) among
    their approvers: every demanding policy must accept the same approval."""
    return [
        p.name
        for p in policies
        if approval_required(p, tier) and not (p.compliance and p.compliance.may_approve(approver, groups))
    ]


def check_approval(deployment: ModelDeployment, policy: Policy, evidence: Evidence, tier: EffectiveTier) -> GateResult:
    """Where the model is served: a valid approval whose approver (user, and groups as stamped when approving) this
    policy names today, so a policy that stopped naming them stops the approval from counting."""
    if not approval_required(policy, tier):
        return policy_result(GATE, policy, "skip", f"risk tier {tier.describe()} needs no approval")
    approval = evidence.approval
    digest = deployment.spec.model.digest
    if approval is None or not approval.approved:
        found = f": {approval.problem}" if approval is not None and approval.problem else "; none is valid"
        return policy_result(
            GATE,
            policy,
            "fail",
            f"risk tier {tier.describe()} requires a ModelApproval of this ModelDeployment (its uid) at "
            f"{digest[:19]}... by a second person{found}",
            "ask an approver named by the policy to create a ModelApproval for this ModelDeployment as it is now",
        )
    rules = policy.compliance
    if rules is None or not rules.may_approve(approval.approver, approval.groups):
        return policy_result(
            GATE,
            policy,
            "fail",
            f"ModelApproval {approval.name}: approver {approval.approver!r} (groups {list(approval.groups)} when "
            "approving) is not an approver under this policy now",
            "ask a user or group listed in the policy's compliance.approvers to approve again",
        )
    return policy_result(GATE, policy, "pass", f"approved by {approval.approver} ({approval.name})")
