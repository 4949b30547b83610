"""The verification plan: what a serving pod needs to check that the bytes it loads are the bytes that were signed.

The operator renders it into the pod (the OMS bundle, the digest admission verified, and the authorities with
thresholds of the policies that admitted it); the webhook derives it again from the admitted ModelDeployment and
the cluster policies and compares, so a plan is never trusted because an editable object carries it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devmlops.core.policy import Authority, Policy
from devmlops.core.ports import SignatureVerifier, SignedModel, VerificationFailed
from devmlops.errors import InvalidInputError

__all__ = ["ENV_PLAN", "VerificationPlan"]

ENV_PLAN = "DEVMLOPS_VERIFICATION"


def _authority_json(a: Authority) -> dict[str, str]:
    fields = {
        "name": a.name,
        "kind": a.kind,
        "publicKey": a.public_key,
        "certificates": a.certificates,
        "identity": a.identity,
        "identityRegExp": a.identity_regexp,
        "issuer": a.issuer,
        "trustConfig": a.trust_config,
    }
    return {k: v for k, v in fields.items() if v}


def _authority(raw: Mapping[str, Any]) -> Authority:
    return Authority(
        name=str(raw["name"]),
        kind=raw["kind"],
        public_key=raw.get("publicKey", ""),
        certificates=raw.get("certificates", ""),
        identity=raw.get("identity", ""),
        identity_regexp=raw.get("identityRegExp", ""),
        issuer=raw.get("issuer", ""),
        trust_config=raw.get("trustConfig", ""),
    )


SCAN_PREDICATE = "https://devmlops.io/attestation/scan/v1"


@dataclass(frozen=True, slots=True)
class VerificationPlan:
    bundle: str
    digest: str
    groups: tuple[tuple[int, tuple[Authority, ...]], ...]  # (threshold, authorities) per admitting policy
    scan: bool = False  # scan the fetched files for unsafe serialization before the server starts

    @classmethod
    def for_policies(cls, bundle: str, digest: str, policies: Sequence[Policy]) -> VerificationPlan:
        """A policy that requires scan evidence also has the bytes scanned where they load, attested or not."""
        ordered = sorted(policies, key=lambda p: (p.namespace, p.name))  # one plan, whatever order policies came in
        scan = any(r.predicate_type == SCAN_PREDICATE for p in policies for r in p.evidence) or any(
            SCAN_PREDICATE in (rules.required_evidence or ())
            for p in policies
            if p.compliance is not None
            for rules in p.compliance.tiers.values()
        )
        return cls(bundle, digest, tuple((p.threshold, p.authorities) for p in ordered if p.authorities), scan)

    @classmethod
    def for_bundles(
        cls, bundles: Sequence[str], digest: str, policies: Sequence[Policy], verifier: SignatureVerifier
    ) -> VerificationPlan:
        """The plan with the first of ``bundles`` that meets every admitting policy for ``digest``: an OCI model may
        carry several signatures as referrers, and whoever may push to its repository can add one before the right
        one. When none does, the first (the serving pod then refuses to start: fail closed)."""
        plans = [cls.for_policies(bundle, digest, policies) for bundle in bundles]
        if not plans:
            return cls.for_policies("", digest, policies)
        for plan in plans:
            try:
                plan.verify_signature(verifier)  # cached by digest of the bundle: the decision verified them already
            except VerificationFailed:
                continue
            return plan
        return plans[0]

    def to_json(self) -> str:
        groups = [{"threshold": t, "authorities": [_authority_json(a) for a in auths]} for t, auths in self.groups]
        plan: dict[str, Any] = {"bundle": self.bundle, "digest": self.digest, "policies": groups}
        if self.scan:
            plan["scan"] = True
        return json.dumps(plan, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> VerificationPlan:
        try:
            raw = json.loads(text)
            groups = tuple(
                (int(g["threshold"]), tuple(_authority(a) for a in g["authorities"])) for g in raw["policies"]
            )
            scan = raw.get("scan", False)
            if not isinstance(scan, bool):
                raise TypeError(f"scan: got {scan!r}, expected true or false")
            plan = cls(str(raw["bundle"]), str(raw["digest"]), groups, scan)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"{ENV_PLAN}: not a verification plan ({exc})") from exc
        if not plan.groups:
            raise InvalidInputError(f"{ENV_PLAN}: names no authority; refusing to serve unverified bytes")
        return plan

    def same_as(self, other: VerificationPlan) -> bool:
        """Equal bundle, digest, scan and authority groups, whatever the order the policies were listed in."""

        def groups(plan: VerificationPlan) -> list[str]:
            return sorted(
                json.dumps([t, [_authority_json(a) for a in auths]], sort_keys=True) for t, auths in plan.groups
            )

        return (self.bundle, self.digest, self.scan, groups(self)) == (
            other.bundle,
            other.digest,
            other.scan,
            groups(other),
        )

    def verify_signature(self, verifier: SignatureVerifier) -> SignedModel:
        """Every admitting policy's threshold must be met again, and the bundle must sign the admitted digest."""
        signed: SignedModel | None = None
        for threshold, authorities in self.groups:
            passed = 0
            for authority in authorities:
                try:
                    signed = verifier.verify_model(self.bundle, authority)
                except VerificationFailed:
                    continue
                passed += 1
            if passed < threshold:
                names = ", ".join(a.name for a in authorities)
                raise VerificationFailed(
                    f"signature verified for {passed} of {threshold} required authorities ({names})"
                )
        assert signed is not None  # a group with threshold >= 1 passed
        if signed.digest != self.digest:
            raise VerificationFailed(f"the signature covers {signed.digest}, but {self.digest} was admitted")
        return signed
