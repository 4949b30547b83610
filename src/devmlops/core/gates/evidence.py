"""The evidence gate: the model carries signed attestations that its policy requires (an evaluation, a fairness or
robustness test, a scan of its files, a data audit), each about this model's digest, recent enough, and passing
the conditions the security team wrote in Rego.

Per requirement, every attestation in ``spec.attestations`` is verified against the requirement's authorities
(cached like model signatures: ``adapters/verifycache.py``); one counts when its signed statement has the required
predicate type, names ``spec.model.digest`` as a subject, and its signed ``timestamp`` is within ``maxAge`` (and
not in the future). The newest that counts is judged by the requirement's Rego package. Everything read comes
from the signed statement: a carrier can move a bundle between ModelDeployments or ConfigMaps, never change what it
says. A denial names the requirement, the attestation looked at, what was found and what was expected.

The EU AI Act high-risk tier demands evaluation, fairness and robustness evidence (Art. 15: accuracy, robustness,
cybersecurity) unless the policy's ``compliance.tiers.high.requiredEvidence`` says otherwise: a demanded predicate
type that no requirement of the policy covers becomes a requirement signed by the policy's own authorities.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from devmlops.core.attestation import VerifiedAttestation, parse_timestamp
from devmlops.core.evidence import Evidence
from devmlops.core.gates import policy_result
from devmlops.core.gates.compliance import EffectiveTier
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import EvidenceRequirement, Policy, predicate_uri
from devmlops.core.ports import (
    PolicyEngine,
    PolicyEngineUnavailable,
    SignatureVerifier,
    VerificationFailed,
    VerificationUnavailable,
)

__all__ = ["CLOCK_SKEW", "GATE", "TIER_DEFAULTS", "check_evidence", "requirements_for"]

GATE = "evidence"
# What a risk tier demands when the policy's compliance rules do not say (requiredEvidence unset).
TIER_DEFAULTS: dict[str, tuple[str, ...]] = {
    "high": tuple(predicate_uri(name) for name in ("evaluation", "fairness", "robustness")),
}
CLOCK_SKEW = dt.timedelta(minutes=5)  # a timestamp this far ahead of the webhook's clock is still accepted
_FIX = "produce it with devmlops evaluate / scan, sign it with devmlops attest, and list it in spec.attestations"


def _short(digest: str) -> str:
    return digest[:19] + "..." if len(digest) > 22 else digest


def requirements_for(policy: Policy, tier: EffectiveTier) -> tuple[EvidenceRequirement, ...]:
    """The policy's evidence requirements plus what the effective risk tier demands under its compliance rules."""
    requirements = [r for r in policy.evidence if not r.tiers or tier.tier in r.tiers]
    if policy.compliance is None or not tier.tier:
        return tuple(requirements)
    rules = policy.compliance.tiers.get(tier.tier)
    demanded = rules.required_evidence if rules is not None and rules.required_evidence is not None else None
    if demanded is None:
        demanded = TIER_DEFAULTS.get(tier.tier, ())
    for predicate_type in demanded:
        if any(r.predicate_type == predicate_type for r in requirements):
            continue
        if not policy.authorities:  # a team policy without signers: the cluster policies demand it under theirs
            continue
        short = predicate_type.rstrip("/").rsplit("/", 2)[-2] if predicate_type.count("/") >= 2 else predicate_type
        requirements.append(
            EvidenceRequirement(
                name=f"eu-ai-act-{tier.tier}-{short}",
                predicate_type=predicate_type,
                authorities=policy.authorities,
                implied_by=f"risk tier {tier.tier}",
            )
        )
    return tuple(requirements)


def _age(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d{hours}h" if days else f"{hours}h{rest // 60}m"


def check_evidence(
    deployment: ModelDeployment,
    policy: Policy,
    evidence: Evidence,
    verifier: SignatureVerifier,
    engine: PolicyEngine | None,
    tier: EffectiveTier,
) -> list[GateResult]:
    requirements = requirements_for(policy, tier)
    if not requirements:
        return []
    now = parse_timestamp(evidence.now)
    result = functools.partial(policy_result, GATE, policy)
    if now is None:
        return [result("error", f"no clock to judge evidence age (got {evidence.now!r}); denied (fail closed)")]
    return [_requirement(r, deployment, policy, evidence, verifier, engine, tier, now) for r in requirements]


def _label(index: int, source: str) -> str:
    where = f"spec.attestations[{index}]"
    return where if source.startswith(where) else f"{where} ({source})"


def _requirement(
    requirement: EvidenceRequirement,
    deployment: ModelDeployment,
    policy: Policy,
    evidence: Evidence,
    verifier: SignatureVerifier,
    engine: PolicyEngine | None,
    tier: EffectiveTier,
    now: dt.datetime,
) -> GateResult:
    result = functools.partial(policy_result, GATE, policy)
    what = f"evidence {requirement.describe()}" + (
        f", demanded by {requirement.implied_by}" if requirement.implied_by else ""
    )
    wanted = deployment.spec.model.digest
    near: list[str] = []  # attestations of the required type that do not count, and why
    other: list[str] = []  # attestations that are not of this type, or do not verify
    counted: list[tuple[dt.datetime | None, str, VerifiedAttestation]] = []
    for index, document in enumerate(evidence.attestations):
        label = _label(index, document.source)
        if document.text is None:
            other.append(f"{label}: {document.error}")
            continue
        verified, failures = None, []
        for authority in requirement.authorities:
            try:
                verified = verifier.verify_attestation(document.text, authority)
            except VerificationFailed as exc:
                failures.append(f"{authority.name}: {exc.user_message}")
                continue
            except VerificationUnavailable as exc:
                return result("error", f"{what}: {label}: {exc.user_message}", "retry; devmlops fails closed")
            break
        if verified is None:
            other.append(f"{label}: not verified ({'; '.join(failures[:2])})")
            continue
        statement = verified.statement
        if statement.predicate_type != requirement.predicate_type:
            other.append(f"{label}: predicateType {statement.predicate_type}")
            continue
        if wanted not in statement.digests:
            found = ", ".join(_short(d) for d in sorted(statement.digests))
            near.append(f"{label}: wrong subject: it is about {found}, expected spec.model.digest {_short(wanted)}")
            continue
        stamp = parse_timestamp(statement.timestamp)
        if stamp is None and requirement.max_age_seconds is not None:
            near.append(f"{label}: no valid predicate.timestamp, but maxAge {requirement.max_age} needs one")
            continue
        if stamp is not None and stamp > now + CLOCK_SKEW:
            near.append(f"{label}: timestamp {statement.timestamp} is in the future (now {evidence.now})")
            continue
        if stamp is not None and requirement.max_age_seconds is not None:
            age = now - stamp
            if age.total_seconds() > requirement.max_age_seconds:
                near.append(
                    f"{label}: expired: made {statement.timestamp}, {_age(age)} old, expected at most "
                    f"{requirement.max_age}"
                )
                continue
        counted.append((stamp, label, verified))
    if not counted:
        problems = near + other
        detail = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        reason = f"{what}: no attestation satisfies it: " + (detail or "spec.attestations lists none")
        return result("fail", reason, _FIX)
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    stamp, label, chosen = max(counted, key=lambda item: item[0] or epoch)
    statement = chosen.statement
    seen = f"{label}, signed by {chosen.signer}" + (f" at {statement.timestamp}" if statement.timestamp else "")
    if not requirement.package:
        return result("pass", f"evidence '{requirement.name}': {seen}")
    if engine is None:
        return result(
            "error",
            f"evidence '{requirement.name}': conditions in {requirement.package}: no OPA is configured (fail closed)",
            "give the webhook or `devmlops check` an --opa-url",
        )
    rego_input = _rego_input(requirement, deployment, chosen, label, tier, evidence.now)
    try:
        verdict = engine.evaluate(requirement.package, rego_input)
    except PolicyEngineUnavailable as exc:
        return result("error", f"evidence '{requirement.name}': {requirement.package}: {exc.user_message}", "check OPA")
    if verdict.deny:
        more = f" (and {len(verdict.deny) - 1} more)" if len(verdict.deny) > 1 else ""
        return result(
            "fail",
            f"evidence '{requirement.name}': {seen}: {verdict.deny[0]}{more}",
            "fix the model and attest again; the threshold is the policy's",
        )
    return result("pass", f"evidence '{requirement.name}': {seen}; conditions in {requirement.package} hold")


def _rego_input(
    requirement: EvidenceRequirement,
    deployment: ModelDeployment,
    chosen: VerifiedAttestation,
    label: str,
    tier: EffectiveTier,
    now: str,
) -> dict[str, Any]:
    """The input of a requirement's Rego package (docs/policies.md, "Evidence requirements")."""
    statement = chosen.statement
    return {
        "requirement": {"name": requirement.name, "predicateType": requirement.predicate_type},
        "attestation": {
            "source": label,
            "predicateType": statement.predicate_type,
            "signer": chosen.signer,
            "timestamp": statement.timestamp,
            "subjects": [{"name": name, "digest": digest} for name, digest in statement.subjects],
            "predicate": dict(statement.predicate),
        },
        "model": {
            "name": deployment.spec.model.name,
            "digest": deployment.spec.model.digest,
            "namespace": deployment.metadata.namespace,
            "labels": dict(deployment.metadata.labels),
        },
        "tier": tier.tier,
        "now": now,
        "parameters": dict(requirement.parameters),
    }
