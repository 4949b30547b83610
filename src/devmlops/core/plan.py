"""The verification plan: what a serving pod needs to check that the bytes it loads are the bytes that were signed.

The operator renders it into the pod (the OMS bundles, the digest admission verified, and the authorities with
thresholds of the policies that admitted it); the webhook derives it again from the admitted ModelDeployment and
the cluster policies and compares, so a plan is never trusted because an editable object carries it.

A policy may require k of n authorities (``threshold``), and their signatures come in one bundle each
(``spec.signature`` plus ``spec.additionalSignatures``): the plan carries every bundle needed to meet each admitting
policy's threshold, at most ``MAX_BUNDLES``, ordered by content (the SHA-256 of each bundle's bytes), not by the
order they were read in: an OCI registry lists a model's referrers in an order of its own, and the webhook and the
operator each read them; a plan that differed only in order would refuse the child. A plan of one bundle keeps the JSON
form it always had (``"bundle"``), so children rendered before k-of-n plans existed stay as they are; two or more
are written as ``"bundles"``.

A policy that restricts ``allow.formats`` has the formats checked where the bytes load, not only against the
requester's ``spec.model.format``: the plan carries the formats every admitting policy allows (``formats``, their
intersection; absent when none restricts) and the runtime kind the rendering serves it with (``runtime``), and the
storage initializer maps the verified files to formats (core/modelformats.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from devmlops.core.modelformats import allowed_formats
from devmlops.core.policy import Authority, Policy
from devmlops.core.ports import SignatureVerifier, SignedModel, VerificationFailed
from devmlops.errors import InvalidInputError

__all__ = ["ENV_PLAN", "MAX_BUNDLES", "VerificationPlan", "served_plan"]

ENV_PLAN = "DEVMLOPS_VERIFICATION"
MAX_BUNDLES = 17  # spec.signature plus at most 16 spec.additionalSignatures (the CRD's bound)


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
    bundles: tuple[str, ...]  # every bundle needed to meet each group's threshold; () when there is none
    digest: str
    groups: tuple[tuple[int, tuple[Authority, ...]], ...]  # (threshold, authorities) per admitting policy
    scan: bool = False  # scan the fetched files for unsafe serialization before the server starts
    # Served by MLServer behind the guard (a guarded KServe model, core/render.py): MLServer takes its server settings
    # from a settings.json at the model root over its environment (MLSERVER_HOST=127.0.0.1), so the files must not
    # carry one.
    mlserver_guarded: bool = False
    # The formats every admitting policy allows (sorted); None: no policy restricts them.
    formats: tuple[str, ...] | None = None
    runtime: str = ""  # the runtime kind the children serve it with ("triton", "kserve"; set in core/render.py)

    @classmethod
    def for_policies(cls, bundles: str | Sequence[str], digest: str, policies: Sequence[Policy]) -> VerificationPlan:
        """A policy that requires scan evidence also has the bytes scanned where they load, attested or not."""
        ordered = sorted(policies, key=lambda p: (p.namespace, p.name))  # one plan, whatever order policies came in
        scan = any(r.predicate_type == SCAN_PREDICATE for p in policies for r in p.evidence) or any(
            SCAN_PREDICATE in (rules.required_evidence or ())
            for p in policies
            if p.compliance is not None
            for rules in p.compliance.tiers.values()
        )
        listed = (bundles,) if isinstance(bundles, str) else tuple(bundles)
        groups = tuple((p.threshold, p.authorities) for p in ordered if p.authorities)
        formats = allowed_formats(p.allow.formats for p in policies)
        return cls(tuple(b for b in listed if b), digest, groups, scan, formats=formats)

    @classmethod
    def for_bundles(
        cls, bundles: Sequence[str], digest: str, policies: Sequence[Policy], verifier: SignatureVerifier
    ) -> VerificationPlan:
        """The plan with the bundles that meet every admitting policy's threshold for ``digest``, taken in content
        order (``_content_order``: whatever order the registry or the spec listed them in, the webhook and the
        operator derive the same plan): a bundle is taken when it signs ``digest`` for an authority that a group still
        needs. An OCI model may carry several signatures as referrers, and whoever may push to its repository can add
        one; none of hers is taken unless a trusted authority signed it. When the bundles do not meet every
        threshold, the plan holds the first in that order (the serving pod then refuses to start: fail closed)."""
        given = _content_order(bundles)
        base = cls.for_policies((), digest, policies)
        met: list[set[int]] = [set() for _group in base.groups]  # per group: indexes of the authorities met
        chosen: list[str] = []
        for bundle in given:
            if base._met(met):
                break
            gains = [
                (group, index)
                for group, (threshold, authorities) in enumerate(base.groups)
                if len(met[group]) < threshold
                for index, authority in enumerate(authorities)
                if index not in met[group] and _signs(verifier, bundle, authority, digest)  # cached: admission did it
            ]
            if gains:
                chosen.append(bundle)
                for group, index in gains:
                    met[group].add(index)
        if chosen and base._met(met):
            return replace(base, bundles=tuple(chosen))
        return replace(base, bundles=tuple(given[:1]))

    def _met(self, met: Sequence[set[int]]) -> bool:
        return all(len(done) >= threshold for done, (threshold, _authorities) in zip(met, self.groups, strict=True))

    def to_json(self) -> str:
        groups = [{"threshold": t, "authorities": [_authority_json(a) for a in auths]} for t, auths in self.groups]
        plan: dict[str, Any] = (
            {"bundles": list(self.bundles)}
            if len(self.bundles) > 1
            else {"bundle": self.bundles[0] if self.bundles else ""}
        )
        plan.update(digest=self.digest, policies=groups)
        if self.scan:
            plan["scan"] = True
        if self.mlserver_guarded:
            plan["mlserverGuarded"] = True
        if self.formats is not None:
            plan["formats"] = list(self.formats)
        if self.runtime:
            plan["runtime"] = self.runtime
        return json.dumps(plan, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> VerificationPlan:
        try:
            raw = json.loads(text)
            groups = tuple(
                (int(g["threshold"]), tuple(_authority(a) for a in g["authorities"])) for g in raw["policies"]
            )
            flags = {name: raw.get(key, False) for name, key in (("scan", "scan"), ("mlserver_guarded", _GUARDED))}
            for name, value in flags.items():
                if not isinstance(value, bool):
                    raise TypeError(f"{name}: got {value!r}, expected true or false")
            plan = cls(_bundles(raw), str(raw["digest"]), groups, **flags, formats=_formats(raw), runtime=_runtime(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"{ENV_PLAN}: not a verification plan ({exc})") from exc
        if not plan.groups:
            raise InvalidInputError(f"{ENV_PLAN}: names no authority; refusing to serve unverified bytes")
        return plan

    def same_as(self, other: VerificationPlan) -> bool:
        """Equal bundles (in order), digest, flags, formats, runtime and authority groups, whatever the order the
        policies were listed in."""

        def groups(plan: VerificationPlan) -> list[str]:
            return sorted(
                json.dumps([t, [_authority_json(a) for a in auths]], sort_keys=True) for t, auths in plan.groups
            )

        def key(plan: VerificationPlan) -> tuple[Any, ...]:
            return (plan.bundles, plan.digest, plan.scan, plan.mlserver_guarded, plan.formats, plan.runtime)

        return (key(self), groups(self)) == (key(other), groups(other))

    def verify_signature(self, verifier: SignatureVerifier) -> SignedModel:
        """Every admitting policy's threshold must be met again, by distinct authorities each verifying one of the
        bundles for the admitted digest; and every bundle must verify for some authority and name that digest and
        the same files, so that the files are hashed once against one manifest. The signed model returned names
        every signer."""
        verified: dict[int, SignedModel] = {}  # bundle index -> what it signs, for the admitted digest
        covers: set[str] = set()
        for threshold, authorities in self.groups:
            passed = 0
            for authority in authorities:
                signed = self._verified_by(verifier, authority, verified, covers)
                passed += signed is not None
            if passed < threshold:
                if covers:
                    found = ", ".join(sorted(covers))
                    raise VerificationFailed(f"the signature covers {found}, but {self.digest} was admitted")
                names = ", ".join(a.name for a in authorities)
                raise VerificationFailed(
                    f"signature verified for {passed} of {threshold} required authorities ({names})"
                )
        unverified = [str(index) for index in range(len(self.bundles)) if index not in verified]
        if unverified:
            raise VerificationFailed(
                f"bundle(s) {', '.join(unverified)} of {len(self.bundles)} verify for none of the authorities "
                f"for {self.digest}"
            )
        first = verified[0]
        for index, signed in sorted(verified.items()):
            if signed.files != first.files:
                raise VerificationFailed(
                    f"bundle {index} signs other files than bundle 0 for {self.digest}: got "
                    f"{len(signed.files)} file(s), expected the {len(first.files)} of bundle 0"
                )
        signers = list(dict.fromkeys(signed.signer for _index, signed in sorted(verified.items())))
        return replace(first, signer=", ".join(signers)) if len(signers) > 1 else first

    def _verified_by(
        self, verifier: SignatureVerifier, authority: Authority, verified: dict[int, SignedModel], covers: set[str]
    ) -> SignedModel | None:
        """The first bundle that verifies for ``authority`` and signs the admitted digest (None: none does); every
        bundle that verifies is recorded in ``verified`` (admitted digest) or ``covers`` (another digest)."""
        found: SignedModel | None = None
        for index, bundle in enumerate(self.bundles):
            try:
                signed = verifier.verify_model(bundle, authority)
            except VerificationFailed:
                continue
            if signed.digest != self.digest:
                covers.add(signed.digest)
                continue
            verified.setdefault(index, signed)
            if found is None:
                found = signed
        return found


_GUARDED = "mlserverGuarded"


def served_plan(plan_json: str, *, runtime: str, mlserver_guarded: bool = False) -> str:
    """``plan_json`` for a model served by ``runtime`` (a runtime kind), behind the guard on MLServer or not
    (``mlserver_guarded``). A text that is no plan stays as it is: the storage initializer and the webhook refuse it
    anyway."""
    try:
        plan = VerificationPlan.from_json(plan_json)
    except InvalidInputError:
        return plan_json
    return replace(plan, runtime=runtime, mlserver_guarded=mlserver_guarded).to_json()


def _formats(raw: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "formats" not in raw:
        return None
    formats = raw["formats"]
    if not isinstance(formats, list) or not all(isinstance(f, str) and f for f in formats):
        raise TypeError(f"formats: got {formats!r:.80}, expected a list of format names")
    return tuple(sorted(set(formats)))


def _runtime(raw: Mapping[str, Any]) -> str:
    runtime = raw.get("runtime", "")
    if not isinstance(runtime, str):
        raise TypeError(f"runtime: got {runtime!r:.40}, expected a runtime kind")
    return runtime


def _signs(verifier: SignatureVerifier, bundle: str, authority: Authority, digest: str) -> bool:
    try:
        return verifier.verify_model(bundle, authority).digest == digest
    except VerificationFailed:
        return False


def _content_order(bundles: Sequence[str]) -> list[str]:
    """The non-empty ``bundles`` sorted by the SHA-256 of their bytes (then the bytes, for the impossible tie)."""
    return sorted((b for b in bundles if b), key=lambda b: (hashlib.sha256(b.encode()).hexdigest(), b))


def _bundles(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """``"bundle"`` (one, the form every plan had before k-of-n; '' for none) or ``"bundles"`` (two to MAX_BUNDLES),
    never both."""
    if ("bundle" in raw) == ("bundles" in raw):
        raise KeyError("expected exactly one of 'bundle' and 'bundles'")
    if "bundle" in raw:
        one = raw["bundle"]
        if not isinstance(one, str):
            raise TypeError(f"bundle: got {type(one).__name__}, expected a string")
        return (one,) if one else ()
    many = raw["bundles"]
    if not isinstance(many, list) or not 2 <= len(many) <= MAX_BUNDLES:
        raise TypeError(f"bundles: got {many!r:.80}, expected a list of 2 to {MAX_BUNDLES} bundles")
    if not all(isinstance(b, str) and b for b in many):
        raise TypeError("bundles: expected non-empty strings")
    return tuple(many)
