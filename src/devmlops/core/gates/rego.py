"""The rego gate: the security team's Rego packages (chosen by the policy) evaluated in OPA with one documented
input document (docs/policies.md). ``deny`` messages deny; ``warn`` messages become warnings; an OPA that is
down, slow or failing denies with that reason (fail closed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from devmlops.core.evidence import Evidence
from devmlops.core.gates import policy_result
from devmlops.core.gates.compliance import EffectiveTier, effective_tier
from devmlops.core.model import GateResult, Mode, Outcome
from devmlops.core.policy import Policy
from devmlops.core.ports import PolicyEngine, PolicyEngineUnavailable, SignedModel
from devmlops.core.review import AdmissionRequest

__all__ = ["GATE", "Stage", "check_rego", "rego_input"]

GATE = "rego"
Stage = Literal["admission", "serving"]


def rego_input(
    request: AdmissionRequest,
    obj: Mapping[str, Any],
    policy: Policy,
    evidence: Evidence,
    signed: SignedModel | None,
    *,
    stage: Stage,
    tier: EffectiveTier | None = None,
) -> dict[str, Any]:
    """The input document every package sees (stable: security teams write Rego against it). ``compliance.tier`` is
    the effective tier (``effective_tier()`` under every selecting policy; under ``policy`` alone when not given)."""
    summary = evidence.sbom_summary
    tier = tier or effective_tier(obj, [policy], summary)
    metadata = obj.get("metadata") or {}
    return {
        "stage": stage,
        "request": {
            "uid": request.uid,
            "operation": request.operation,
            "namespace": request.namespace,
            "name": request.name,
            "dryRun": request.dry_run,
        },
        "user": {"username": request.username, "groups": list(request.groups)},
        "object": {
            "metadata": {
                "name": metadata.get("name", request.name),
                "namespace": request.namespace,
                "labels": dict(metadata.get("labels") or {}),
                "annotations": dict(metadata.get("annotations") or {}),
            },
            "spec": dict(obj.get("spec") or {}),
        },
        "signature": (
            {
                "verified": True,
                "digest": signed.digest,
                "signer": signed.signer,
                "modelName": signed.model_name,
                "files": [{"name": n, "digest": d} for n, d in signed.files],
            }
            if signed
            else {"verified": False}
        ),
        "sbom": (
            {
                "format": summary.format,
                "specVersion": summary.spec_version,
                "models": [
                    {
                        "name": c.name,
                        "version": c.version,
                        "hashes": [f"{a}:{h}" for a, h in c.hashes],
                        "licenses": list(c.licenses),
                        "modelCardFields": sorted(c.model_card_fields),
                        "risk": c.risk,
                    }
                    for c in summary.model_candidates  # as the sbom gate binds them (SPDX 2: packages and files)
                ],
            }
            if summary
            else None
        ),
        "registry": _registry(evidence),
        "compliance": {
            "tier": tier.tier,
            "declaredTier": tier.label,
            "statedTier": tier.stated,
            "assignedTier": tier.assigned,
            "labels": dict(metadata.get("labels") or {}),
        },
        "approval": (
            {
                "approved": evidence.approval.approved,
                "approver": evidence.approval.approver,
                "expires": evidence.approval.expires,
            }
            if evidence.approval
            else {"approved": False}
        ),
        "parameters": dict(policy.rego_parameters),
        "policy": policy.name,
    }


def check_rego(policy: Policy, document: Mapping[str, Any], engine: PolicyEngine | None) -> list[GateResult]:
    if not policy.rego_packages:
        return []

    def result(outcome: Outcome, reason: str, *, package: str, mode: Mode | None = None, hint: str = "") -> GateResult:
        return policy_result(GATE, policy, outcome, f"{package}: {reason}", hint, mode=mode)

    if engine is None:
        return [
            result(
                "error",
                "no OPA is configured (fail closed)",
                package=policy.rego_packages[0],
                hint="give the webhook or `devmlops check` an --opa-url",
            )
        ]
    results: list[GateResult] = []
    for package in policy.rego_packages:
        try:
            verdict = engine.evaluate(package, document)
        except PolicyEngineUnavailable as exc:
            results.append(result("error", exc.user_message, package=package, hint="check OPA; devmlops fails closed"))
            continue
        if verdict.deny:
            more = f" (and {len(verdict.deny) - 1} more)" if len(verdict.deny) > 1 else ""
            results.append(result("fail", verdict.deny[0] + more, package=package))
        else:
            results.append(result("pass", "allowed", package=package))
        results.extend(result("fail", message, package=package, mode="warn") for message in verdict.warn)
    return results


def _registry(evidence: Evidence) -> dict[str, Any] | None:
    """The registered version spec.model.registry resolved to (None when it names none)."""
    found = evidence.registry
    if found is None:
        return None
    return {
        "registry": found.registry,
        "name": found.name,
        "requested": found.requested,
        "version": found.version,
        "source": found.source,
        "aliases": list(found.aliases),
        "tags": {k: v for k, v in found.tags.items() if not k.startswith("devmlops.io/")},
        "error": found.error,
    }
