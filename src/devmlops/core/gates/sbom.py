"""The sbom gate: the ML-BOM is present in an accepted format, names the signed model (by its signed digest or
the hashes of all its signed files, or by name where the policy allows it), carries no denied license, has the
required model-card fields, and, where present or required, its own signature verifies for one of the policy's
authorities."""

from __future__ import annotations

import functools
import re

from devmlops.core.evidence import Evidence
from devmlops.core.gates import policy_result
from devmlops.core.model import GateResult
from devmlops.core.policy import Policy
from devmlops.core.ports import SignatureVerifier, SignedModel, VerificationFailed, VerificationUnavailable
from devmlops.core.sbom import SbomSummary

__all__ = ["GATE", "check_sbom", "license_terms"]

GATE = "sbom"
_OPERATORS = {"AND", "OR", "WITH"}


def license_terms(expression: str) -> set[str]:
    """The license ids in an SPDX expression, upper-cased ("MIT OR (GPL-3.0-only WITH X)" -> MIT, GPL-3.0-ONLY, X)."""
    return {t.upper() for t in re.split(r"[\s()]+", expression) if t and t.upper() not in _OPERATORS}


def check_sbom(
    policy: Policy,
    evidence: Evidence,
    signed: SignedModel | None,
    verifier: SignatureVerifier,
) -> GateResult:
    requirements = policy.sbom

    result = functools.partial(policy_result, GATE, policy)

    if evidence.sbom is None:
        if requirements.required:
            return result(
                "fail", "spec.sbom is missing: expected an ML-BOM (CycloneDX or SPDX)", "set spec.sbom.document"
            )
        return result("skip", "the policy does not require an SBOM and none is given")
    if evidence.sbom.text is None:
        return result("fail", f"SBOM document not found: {evidence.sbom.error}", "create the ConfigMap or Secret")
    summary = evidence.sbom_summary
    if summary is None:
        return result("fail", f"SBOM invalid: {evidence.sbom_error}", "fix the document so that it validates")
    if requirements.formats and summary.format not in requirements.formats:
        allowed = ", ".join(requirements.formats)
        return result("fail", f"SBOM format: got {summary.format}, expected one of {allowed}")
    failure = _binding_failure(summary, signed, policy) or _content_failure(summary, policy)
    if failure:
        return result("fail", failure[0], failure[1])
    signature_note = _check_sbom_signature(evidence, policy, verifier)
    if signature_note.startswith("!"):
        return result("fail", signature_note[1:], "sign the SBOM bytes with an authority the policy trusts")
    models = ", ".join(c.name for c in summary.models) or "no model component"
    return result("pass", f"{summary.format} {summary.spec_version} SBOM valid ({models}){signature_note}")


def _binding_failure(summary: SbomSummary, signed: SignedModel | None, policy: Policy) -> tuple[str, str] | None:
    if not policy.sbom.bind_to_digest:
        return None
    candidates = summary.model_candidates
    if not candidates:
        return "SBOM has no machine-learning-model component to bind to the signed model", "describe the model"
    if signed is None:
        return "SBOM binding: no verified signature to bind the SBOM to", "fix the signature gate first"
    stated = {value for c in candidates for value in c.digest("sha256")}
    # With name binding, only names the signature covers: spec.model.name is the requester's word, and an SBOM signed
    # for another model would bind to whatever name the ModelDeployment gives itself.
    named = {c.name for c in candidates} if policy.sbom.allow_name_binding else set()
    if signed.digest.removeprefix("sha256:") in stated or signed.model_name in named:
        return None
    # File by file, only the whole model binds: two signed models may share a file (a config, a tokenizer, an empty
    # file) or a file name, and an SBOM that covers one of them would otherwise bind to every model carrying it.
    uncovered = sorted(
        name for name, digest in signed.files if digest.removeprefix("sha256:") not in stated and name not in named
    )
    if signed.files and not uncovered:
        return None
    found = ", ".join(f"{c.name} {list(c.digest('sha256')) or 'no sha256'}" for c in candidates[:3])
    how = "a SHA-256 hash" + (" or name" if policy.sbom.allow_name_binding else "")
    or_name = "or name " if policy.sbom.allow_name_binding else ""
    missing = ", ".join(uncovered[:3]) + (f" (and {len(uncovered) - 3} more)" if len(uncovered) > 3 else "")
    return (
        f"SBOM binding: got model component(s) {found}, expected {how} matching the signed model "
        f"'{signed.model_name}' (its digest {signed.digest[:19]}..., or the SHA-256 {or_name}of every signed file; "
        f"not covered: {missing or 'none'})",
        "add the model's signed digest to the SBOM model component's hashes, or list every signed file's sha256",
    )


def _content_failure(summary: SbomSummary, policy: Policy) -> tuple[str, str] | None:
    denied = {d.upper() for d in policy.sbom.denied_licenses}
    for component in summary.components:
        for expression in component.licenses:
            hit = license_terms(expression) & denied
            if hit:
                return (
                    f"SBOM license: component '{component.name}' is licensed {expression}, "
                    f"which the policy denies ({', '.join(sorted(hit))})",
                    "use a model whose license the policy allows",
                )
    required = policy.sbom.required_model_card_fields
    if required:
        for model in summary.model_candidates or (None,):
            present = model.model_card_fields if model else frozenset()
            missing = [f for f in required if f not in present]
            if missing:
                name = model.name if model else "(none)"
                return (
                    f"SBOM model card of '{name}': missing {', '.join(missing)}; found {sorted(present) or 'none'}",
                    "add the missing model-card fields to the SBOM",
                )
    return None


def _check_sbom_signature(evidence: Evidence, policy: Policy, verifier: SignatureVerifier) -> str:
    """'' when not needed, '; signed by X' on success, '!reason' on failure."""
    document, bundle = evidence.sbom, evidence.sbom_signature
    if bundle is None:
        return (
            "!spec.sbom.signature is missing, and the policy requires a signed SBOM"
            if (policy.sbom.require_signature)
            else ""
        )
    if bundle.text is None:
        return f"!SBOM signature not found: {bundle.error}"
    if document is None or document.text is None:
        return "!spec.sbom.signature is given but the SBOM document is not"
    failures = []
    for authority in policy.authorities:
        try:
            signer = verifier.verify_blob(document.text.encode(), bundle.text, authority)
        except VerificationFailed as exc:
            failures.append(f"{authority.name}: {exc.user_message}")
            continue
        except VerificationUnavailable as exc:
            return f"!SBOM signature could not be verified: {exc.user_message}"
        return f"; SBOM signed by {signer}"
    return f"!SBOM signature does not verify: {'; '.join(failures[:3])}"
