"""The image signature gate: where a policy names ``imageSignatures.authorities``, the model server's image
(``spec.runtime.image``, pinned by digest) must carry a valid signature by one of them.

cosign attaches its signature to the image as an OCI referrer (a Sigstore bundle v0.3: a DSSE envelope over an
in-toto statement whose subject is the image's manifest digest). The shell fetches and verifies those bundles
(``adapters/ocisig.py``) against the image authorities of every policy and hands the result in as evidence; this
gate only reads it, per policy. The digest is the identity: a tag is pinned to its digest when the object is
written (core/pinning.py), so the image served is the one whose signature was checked. An image without a digest, a
registry that cannot be reached or a check past its deadline is a denial (fail closed). With
``imageSignatures.devmlopsImage`` devmlops's own image as installed (the storage initializer and the guard) is held
to the same authorities.

A KServe model's server image is its ClusterServingRuntime's: ``unsigned_images`` holds a serving runtime's images
to the same demand when the runtime is written, and KServe's predictor Deployment's when KServe writes it
(core/workloads.py), so a runtime image nobody signed never runs a model the policy selects.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace

from devmlops.core.evidence import Evidence, ImageSignatures, SignedImages
from devmlops.core.gates import policy_result
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import Policy

__all__ = ["GATE", "check_image_signature", "unsigned_images"]

GATE = "image-signature"
_FIX = (
    "sign the image with `cosign sign --key KEY IMAGE@DIGEST` (with --certificate for a certificate chain) as an "
    "authority the policy names, or use a signed image"
)


def check_image_signature(deployment: ModelDeployment, policy: Policy, evidence: Evidence) -> GateResult | None:
    """None when the policy demands no image signature. With ``imageSignatures.devmlopsImage`` devmlops's own image
    (the guard and the storage initializer) is held to the same authorities; a failure of either image is the
    result (a definite failure before an error: revocation must not wait on an unreadable registry)."""
    if not policy.image_authorities:
        return None
    runtime = _runtime_image(deployment, policy, evidence)
    if not policy.signs_devmlops_image:
        return runtime
    own = _devmlops_image(policy, evidence)
    for outcome in ("fail", "error"):
        for result in (runtime, own):
            if result.outcome == outcome:
                return result
    if runtime.outcome == "skip":
        return replace(runtime, reason=f"{own.reason}; {runtime.reason}")
    return replace(runtime, reason=f"{runtime.reason}; {own.reason}")


def _runtime_image(deployment: ModelDeployment, policy: Policy, evidence: Evidence) -> GateResult:
    result = functools.partial(policy_result, GATE, policy)
    image = deployment.spec.runtime.image
    if not image:
        running = evidence.runtime_image_signatures
        if running is not None:
            return _running(policy, running)
        return result(
            "skip",
            f"spec.runtime.image is not set: the {deployment.spec.runtime.kind} runtime's image comes from a "
            "ClusterServingRuntime; its signature is checked when the runtime is written and again on KServe's "
            "predictor Deployment",
        )
    if "@sha256:" not in image:
        names = [a.name for a in policy.image_authorities]
        return result(
            "fail",
            f"spec.runtime.image: got '{image}', expected an image pinned by digest (repo@sha256:...) whose "
            f"signature can be checked (by {names})",
            "pin the image by digest",
        )
    found = evidence.image_signature
    if found is None or found.image != image:
        return result(
            "error",
            f"spec.runtime.image '{image}': its signature was not checked (no registry access configured for devmlops)",
            "ask the platform team to configure registry access for image signatures",
        )
    return _judged(policy, f"spec.runtime.image '{image}'", found, _FIX)


def _devmlops_image(policy: Policy, evidence: Evidence) -> GateResult:
    """devmlops's own image as the cluster installs it: the guard and the storage initializer run it in every model
    server's Pod. The install sets it, so the fix is the platform team's."""
    found = evidence.devmlops_image_signature
    what = "devmlops's own image (the guard and the storage initializer)"
    if found is None:
        return policy_result(
            GATE,
            policy,
            "error",
            f"{what}: its signature was not checked (no registry access configured for devmlops)",
            "ask the platform team to configure registry access for image signatures",
        )
    if "@sha256:" not in found.image:
        return policy_result(
            GATE,
            policy,
            "fail",
            f"{what}: got '{found.image}', expected an image pinned by digest whose signature can be checked (the "
            "policy sets imageSignatures.devmlopsImage)",
            "install devmlops with its image pinned by digest (chart value image.digest) and signed by an authority "
            "the policy names",
        )
    return _judged(
        policy,
        f"{what} '{found.image}'",
        found,
        "sign devmlops's image as an authority the policy names (`cosign sign --key KEY IMAGE@DIGEST`), or install "
        "a signed one",
    )


def _judged(policy: Policy, what: str, found: ImageSignatures, fix: str) -> GateResult:
    """The verdict on one image's signatures as the shell found them."""
    result = functools.partial(policy_result, GATE, policy)
    if found.error:
        return result("error", f"{what}: {found.error}", "check the registry and try again")
    signed = [a.name for a in policy.image_authorities if a.fingerprint in found.signers]
    if signed:
        return result("pass", f"{what} signed by {signed[0]}")
    names = [a.name for a in policy.image_authorities]
    seen = (
        f"{found.bundles} signature bundle(s), none valid: " + "; ".join(found.problems[:3])
        if found.bundles
        else "no signature attached (no Sigstore bundle among its OCI referrers)"
    )
    return result("fail", f"{what}: got {seen}; expected a signature by one of {names}", fix)


def _running(policy: Policy, found: Mapping[str, ImageSignatures]) -> GateResult:
    """The operator's re-check of a running KServe model: the images its predictor Deployment runs, each signed by
    one of the policy's image authorities now (a key removed since, or a demand added since, degrades the model)."""
    result = functools.partial(policy_result, GATE, policy)
    unreadable = [f"image {image!r}: {signatures.error}" for image, signatures in found.items() if signatures.error]
    if unreadable:
        return result("error", "; ".join(unreadable), "check the registry and try again")
    demand = SignedImages(((policy.name, tuple((a.fingerprint, a.name) for a in policy.image_authorities)),), found)
    problems = unsigned_images(list(found), demand)
    if problems:
        return result("fail", "KServe's predictor runs " + "; ".join(problems), _FIX)
    return result("pass", f"KServe's predictor runs {sorted(found)}, each signed as the policy demands")


def unsigned_images(images: Sequence[str], signed: SignedImages) -> list[str]:
    """What is wrong with the signatures of ``images`` (a serving runtime's, or KServe's predictor Deployment's) for
    each policy that demands image signatures: every pinned image must be signed by one of that policy's image
    authorities. Unpinned images are reported by the allow-list check."""
    problems: list[str] = []
    for policy, authorities in signed.demands:
        names = [name for _fingerprint, name in authorities]
        for image in [i for i in images if "@sha256:" in i]:
            found = signed.found.get(image)
            if found is None:
                problems.append(f"image {image!r}: its signature was not checked (no registry access configured)")
            elif found.error:
                problems.append(f"image {image!r}: {found.error}")
            elif not any(fingerprint in found.signers for fingerprint, _name in authorities):
                seen = (
                    f"{found.bundles} signature bundle(s), none valid: " + "; ".join(found.problems[:2])
                    if found.bundles
                    else "no signature attached"
                )
                problems.append(f"image {image!r} got {seen}; expected a signature by one of {names} (policy {policy})")
    return problems
