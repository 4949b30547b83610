"""The compliance gate: the EU AI Act risk label is present and valid, agrees with what the SBOM says about risk,
and the tier's demands from policy hold (deny, required annotations). Approval is checked where the model is
served (the approval gate), so a high-risk model can be admitted and wait for a second person."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from devmlops.core.evidence import Evidence
from devmlops.core.gates import policy_result
from devmlops.core.model import GateResult
from devmlops.core.policy import RISK_TIERS, Policy

__all__ = ["GATE", "RISK_LABEL", "check_compliance", "risk_tier"]

GATE = "compliance"
RISK_LABEL = "devmlops.io/eu-ai-act-risk"
# SPDX 3 ai_safetyRiskAssessment -> the lowest EU AI Act tier that it is compatible with.
_SPDX_RISK_FLOOR = {"serious": "high", "high": "high", "medium": "limited", "low": "minimal"}


def risk_tier(obj: Mapping[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(RISK_LABEL) or "")


def check_compliance(obj: Mapping[str, Any], policy: Policy, evidence: Evidence) -> GateResult:
    rules = policy.compliance

    result = functools.partial(policy_result, GATE, policy)

    if rules is None:
        return result("skip", "the policy sets no compliance rules")
    tier = risk_tier(obj)
    if not tier:
        if rules.require_risk_label:
            return result(
                "fail",
                f"label {RISK_LABEL} is missing; expected one of {', '.join(RISK_TIERS)}",
                f"label the ModelDeployment with {RISK_LABEL}",
            )
        return result("pass", "no risk label, and the policy does not require one")
    if tier not in RISK_TIERS:
        return result("fail", f"label {RISK_LABEL}: got {tier!r}, expected one of {', '.join(RISK_TIERS)}")
    stated = [c.risk for c in (evidence.sbom_summary.models if evidence.sbom_summary else ()) if c.risk]
    for risk in stated:
        floor = _SPDX_RISK_FLOOR.get(risk.lower())
        if floor and RISK_TIERS.index(tier) < RISK_TIERS.index(floor):
            return result(
                "fail",
                f"label {RISK_LABEL}: got {tier!r}, but the SBOM's safetyRiskAssessment is {risk!r}, "
                f"which needs at least {floor!r}",
                "raise the risk label, or correct the SBOM's risk assessment",
            )
    demands = rules.tiers.get(tier)
    if demands is None:
        return result("pass", f"risk tier {tier}; the policy sets no demands for it")
    if demands.deny:
        return result("fail", f"risk tier {tier}: the policy never admits this tier", "this model cannot be deployed")
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    missing = [a for a in demands.required_annotations if not annotations.get(a)]
    if missing:
        return result(
            "fail",
            f"risk tier {tier}: annotation(s) {', '.join(missing)} missing",
            "add the evidence annotations the tier requires",
        )
    waiting = " (served only after a ModelApproval by a second person)" if demands.require_approval else ""
    return result("pass", f"risk tier {tier}: the policy's demands are met{waiting}")
