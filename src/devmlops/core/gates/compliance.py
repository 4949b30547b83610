"""The compliance gate: the EU AI Act risk label is valid and the demands of the effective risk tier hold under the
policy (deny, required annotations). Approval is checked where the model is served (the approval gate), so a
high-risk model can be admitted and wait for a second person.

The effective tier is the highest of three: the label the ModelDeployment declares, the tier its SBOM states
(SPDX 3 ``ai_safetyRiskAssessment``), and the ``compliance.minimumTier`` that the policies selecting it assign. A
label can raise the tier, never lower it. ``effective_tier`` is the one place that computes it; the compliance and
approval gates, the ModelApproval review, the Rego input and the operator all use it."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devmlops.core.gates import policy_result
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import RISK_TIERS, Policy, tier_rank
from devmlops.core.sbom import SbomSummary

__all__ = ["GATE", "RISK_LABEL", "EffectiveTier", "check_compliance", "effective_tier", "risk_tier"]

GATE = "compliance"
RISK_LABEL = "devmlops.io/eu-ai-act-risk"
# SPDX 3 ai_safetyRiskAssessment -> the EU AI Act tier it states (the lowest tier it is compatible with).
_SPDX_RISK_TIER = {"serious": "high", "high": "high", "medium": "limited", "low": "minimal"}


def risk_tier(obj: Mapping[str, Any]) -> str:
    """The declared tier: the label as written (may be missing or not a tier at all)."""
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(RISK_LABEL) or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectiveTier:
    """The tier a ModelDeployment is held to, and where each candidate came from (for messages and the audit)."""

    tier: str  # the highest of the three; '' when none of them names a tier
    label: str = ""  # as declared ('' when missing; may be a word that is no tier)
    stated: str = ""  # the tier the SBOM states
    stated_by: str = ""  # e.g. "SBOM model 'fraud' safetyRiskAssessment 'serious'"
    assigned: str = ""  # the highest compliance.minimumTier of the selecting policies
    assigned_by: str = ""  # which policy assigns it

    def describe(self) -> str:
        """``high (label 'minimal'; SBOM ... 'serious'; assigned by ClusterModelPolicy p)``: why this tier (just the
        tier when the label alone decides it)."""
        if not (self.stated or self.assigned):
            return self.tier or "none"
        parts = [f"label '{self.label}'" if self.label else "no label"]
        if self.stated:
            parts.append(f"{self.stated_by} states '{self.stated}'")
        if self.assigned:
            parts.append(f"'{self.assigned}' assigned by {self.assigned_by}")
        return f"{self.tier or 'none'} ({'; '.join(parts)})"


def effective_tier(obj: Mapping[str, Any], policies: Sequence[Policy], sbom: SbomSummary | None) -> EffectiveTier:
    """The highest of the declared label, the tier ``sbom`` states, and the tier ``policies`` (those that select
    ``obj``) assign. Evidence can only raise the tier, so any SBOM the ModelDeployment names counts: one that does not
    verify or bind is the sbom gate's to deny, and leaving it out could only lower the tier."""
    label = risk_tier(obj)
    stated, stated_by = "", ""
    for component in sbom.models if sbom else ():
        tier = _SPDX_RISK_TIER.get((component.risk or "").lower(), "")
        if tier_rank(tier) > tier_rank(stated):
            stated, stated_by = tier, f"SBOM model '{component.name}' safetyRiskAssessment '{component.risk}'"
    assigned, assigned_by = "", ""
    for policy in policies:
        tier = policy.compliance.minimum_tier if policy.compliance else ""
        if tier_rank(tier) > tier_rank(assigned):
            kind = "ModelPolicy" if policy.namespace else "ClusterModelPolicy"
            assigned, assigned_by = tier, f"{kind} {policy.name}"
    highest = max((label, stated, assigned), key=tier_rank)
    return EffectiveTier(
        tier=highest if tier_rank(highest) >= 0 else "",
        label=label,
        stated=stated,
        stated_by=stated_by,
        assigned=assigned,
        assigned_by=assigned_by,
    )


def check_compliance(deployment: ModelDeployment, policy: Policy, tier: EffectiveTier) -> GateResult:
    """``tier`` is ``effective_tier()`` of ``deployment`` under every selecting policy, so all judge the same tier."""
    rules = policy.compliance

    result = functools.partial(policy_result, GATE, policy)

    if rules is None:
        return result("skip", "the policy sets no compliance rules")
    if tier.label and tier.label not in RISK_TIERS:
        return result(
            "fail",
            f"label {RISK_LABEL}: got {tier.label!r}, expected one of {', '.join(RISK_TIERS)}",
            f"label the ModelDeployment with one of {', '.join(RISK_TIERS)}",
        )
    if not tier.label and rules.require_risk_label:
        also = f" (the effective tier would be {tier.describe()})" if tier.tier else ""
        return result(
            "fail",
            f"label {RISK_LABEL} is missing; expected one of {', '.join(RISK_TIERS)}{also}",
            f"label the ModelDeployment with {RISK_LABEL}",
        )
    if not tier.tier:
        return result("pass", "no risk label, and the policy does not require one")
    demands = rules.tiers.get(tier.tier)
    raised = (
        f"; the label does not lower it: the tier is {tier.describe()}"
        if tier_rank(tier.label) < tier_rank(tier.tier)
        else ""
    )
    if demands is None:
        return result("pass", f"risk tier {tier.tier}: the policy sets no demands for it{raised}")
    if demands.deny:
        return result(
            "fail",
            f"risk tier {tier.describe()}: the policy never admits this tier",
            "this model cannot be deployed under this policy; a label cannot lower the tier",
        )
    annotations = deployment.metadata.annotations
    missing = [a for a in demands.required_annotations if not annotations.get(a)]
    if missing:
        return result(
            "fail",
            f"risk tier {tier.describe()}: annotation(s) {', '.join(missing)} missing",
            "add the evidence annotations the tier requires",
        )
    waiting = " (served only after a ModelApproval by a second person)" if demands.require_approval else ""
    return result("pass", f"risk tier {tier.tier}: the policy's demands are met{waiting}{raised}")
