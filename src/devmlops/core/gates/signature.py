"""The signature gate: the model's OMS signature verifies for enough of the policy's authorities, and it covers
the digest the ModelDeployment names (``spec.model.digest``). No model bytes are read here."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from devmlops.core.evidence import Evidence
from devmlops.core.gates import policy_result
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import Authority, Policy
from devmlops.core.ports import SignatureVerifier, SignedModel, VerificationFailed, VerificationUnavailable

__all__ = ["GATE", "check_signature"]

GATE = "signature"
_FIX_SIGN = (
    "sign the model with `devmlops sign` (or model_signing) and set spec.signature.inline, "
    "spec.signature.configMapKeyRef or spec.signature.secretKeyRef"
)


def _short(digest: str) -> str:
    return digest[:19] + "..." if len(digest) > 22 else digest


def check_signature(
    deployment: ModelDeployment, policy: Policy, evidence: Evidence, verifier: SignatureVerifier
) -> tuple[GateResult, SignedModel | None]:
    """Any-of (threshold 1) or k-of-n distinct authorities; every verified bundle must name the spec's digest."""

    result = functools.partial(policy_result, GATE, policy)

    if not policy.authorities:
        return result("skip", "this team policy names no signers of its own; the cluster policies check them"), None
    if not evidence.signatures:
        reason = "spec.signature is missing: got no signature bundle, expected the model's OMS signature"
        return result("fail", reason, _FIX_SIGN), None
    bundles = [doc.text for doc in evidence.signatures if doc.text is not None]
    if len(bundles) < len(evidence.signatures):
        missing = next(doc for doc in evidence.signatures if doc.text is None)
        return result("fail", f"signature bundle not found: {missing.error}", _FIX_SIGN), None
    wanted = deployment.spec.model.digest
    satisfied: dict[str, SignedModel] = {}
    failures: list[str] = []
    mismatches: list[str] = []
    for authority in policy.authorities:
        for index, bundle in enumerate(bundles):
            try:
                signed = verifier.verify_model(bundle, authority)
            except VerificationFailed as exc:
                failures.append(f"{authority.name}: {exc.user_message}")
                continue
            except VerificationUnavailable as exc:
                return result("error", f"{authority.name}: {exc.user_message}", "retry; devmlops fails closed"), None
            if signed.digest != wanted:
                mismatches.append(
                    f"bundle {index} verified for {authority.name} but signs {_short(signed.digest)} "
                    f"(model '{signed.model_name}')"
                )
                continue
            satisfied[authority.name] = signed
            break
    if len(satisfied) >= policy.threshold:
        names = ", ".join(sorted(satisfied))
        signed = next(iter(satisfied.values()))
        reason = (
            f"OMS signature verified for {names} ({len(satisfied)} of {policy.threshold} required): "
            f"model '{signed.model_name}' {_short(signed.digest)}, {len(signed.files)} file(s), signer {signed.signer}"
        )
        return result("pass", reason), signed
    if mismatches:
        reason = f"spec.model.digest: got {_short(wanted)}, but {mismatches[0]}"
        return result("fail", reason, "set spec.model.digest to the digest the signature covers, or re-sign"), None
    expected = ", ".join(authority.describe() for authority in _unsatisfied(policy, satisfied))
    found = "; ".join(failures[:3]) or "no verifiable bundle"
    needed = f"{policy.threshold} of" if policy.threshold > 1 else "one of"
    reason = f"got {len(satisfied)} verified authorities ({found}), expected {needed}: {expected}"
    return result("fail", reason, "sign with a key or identity that the policy's authorities trust"), None


def _unsatisfied(policy: Policy, satisfied: Mapping[str, SignedModel]) -> list[Authority]:
    return [authority for authority in policy.authorities if authority.name not in satisfied]
