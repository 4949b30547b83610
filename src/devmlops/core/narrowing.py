"""A team's ModelPolicy may only add requirements: find what in it would widen a cluster policy.

A ModelPolicy is always checked in addition to the cluster policies, so it could never admit more; refusing the
attempt anyway keeps a team from believing it did (an allow-list entry outside the cluster's does nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from devmlops.core.gates.evidence import TIER_DEFAULTS
from devmlops.core.globs import glob_matches
from devmlops.core.policy import RISK_TIERS, Policy, predicate_uri, tier_rank

__all__ = ["widenings"]

_GLOB_LISTS = {"storageUris": "storage_uris", "images": "images"}
_SET_LISTS = {"runtimes": "runtimes", "formats": "formats"}


def widenings(team_spec: Mapping[str, Any], cluster: Sequence[Policy]) -> list[str]:
    """Every way ``team_spec`` (a ModelPolicy spec) tries to relax one of the ``cluster`` policies."""
    problems: list[str] = []
    allow = team_spec.get("allow") or {}
    sbom = team_spec.get("sbom") or {}
    compliance = team_spec.get("compliance") or {}
    if "s3Endpoints" in allow:
        # Only ClusterModelPolicies allow endpoints (core/storageinit.py); absent there means none, so a team's list
        # could only look like a widening.
        problems.append("spec.allow.s3Endpoints: only a ClusterModelPolicy allows S3 endpoints")
    for policy in cluster:
        where = f"ClusterModelPolicy {policy.name}"
        for key, attr in _GLOB_LISTS.items():
            theirs = getattr(policy.allow, attr)
            for glob in allow.get(key) or []:
                if theirs is not None and not any(glob_matches(c, glob) for c in theirs):
                    problems.append(f"spec.allow.{key} '{glob}' is outside what {where} allows {list(theirs)}")
        for key, attr in _SET_LISTS.items():
            theirs = getattr(policy.allow, attr)
            for item in allow.get(key) or []:
                if theirs is not None and item not in theirs:
                    problems.append(f"spec.allow.{key} '{item}' is not allowed by {where} {list(theirs)}")
        relaxing = [
            ("required", False, policy.sbom.required, "an SBOM"),
            ("bindToDigest", False, policy.sbom.bind_to_digest, "SBOM binding to the signed digest"),
            ("requireSignature", False, policy.sbom.require_signature, "a signed SBOM"),
            ("allowNameBinding", True, not policy.sbom.allow_name_binding, "hash binding (no name binding)"),
        ]
        for key, relaxed, cluster_demands, what in relaxing:
            if sbom.get(key) is relaxed and cluster_demands:
                problems.append(f"spec.sbom.{key}: {relaxed}, but {where} requires {what}")
        if policy.compliance is not None:
            minimum, theirs_minimum = compliance.get("minimumTier"), policy.compliance.minimum_tier
            if minimum is not None and theirs_minimum and tier_rank(str(minimum)) < tier_rank(theirs_minimum):
                problems.append(
                    f"spec.compliance.minimumTier: got {minimum!r}, but {where} assigns at least {theirs_minimum!r} "
                    f"(a team may only raise it: one of {', '.join(RISK_TIERS[RISK_TIERS.index(theirs_minimum) :])})"
                )
            if compliance.get("requireRiskLabel") is False and policy.compliance.require_risk_label:
                problems.append(f"spec.compliance.requireRiskLabel: false, but {where} requires the risk label")
            for tier, rules in (compliance.get("tiers") or {}).items():
                theirs_tier = policy.compliance.tiers.get(tier)
                if theirs_tier and theirs_tier.deny and rules.get("deny") is False:
                    problems.append(f"spec.compliance.tiers.{tier}.deny: false, but {where} denies tier {tier}")
                if theirs_tier and theirs_tier.require_approval and rules.get("requireApproval") is False:
                    problems.append(f"spec.compliance.tiers.{tier}.requireApproval: false, but {where} requires it")
                ours = rules.get("requiredEvidence") if isinstance(rules, Mapping) else None
                if isinstance(ours, list):
                    demanded = _demanded(policy, str(tier))
                    dropped = sorted(set(demanded) - {predicate_uri(str(t)) for t in ours})
                    if dropped:
                        problems.append(
                            f"spec.compliance.tiers.{tier}.requiredEvidence: leaves out {', '.join(dropped)}, which "
                            f"{where} requires for tier {tier} (a team may only add evidence)"
                        )
    return problems


def _demanded(policy: Policy, tier: str) -> tuple[str, ...]:
    """The predicate types a cluster policy demands for ``tier`` (its requiredEvidence, or the tier's default)."""
    rules = policy.compliance.tiers.get(tier) if policy.compliance else None
    if rules is not None and rules.required_evidence is not None:
        return rules.required_evidence
    return TIER_DEFAULTS.get(tier, ()) if policy.compliance else ()
