"""Normalized policies, compiled from ClusterModelPolicy objects.

Compilation checks everything the CRD schema cannot (regular expressions, PEM shape, globs, thresholds against
the number of authorities) and names the field that is wrong, so a broken policy is reported, never half-applied.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from devmlops.core.model import Mode
from devmlops.errors import InvalidInputError

__all__ = [
    "RISK_TIERS",
    "AllowList",
    "Authority",
    "AuthorityKind",
    "ComplianceRules",
    "LabelSelector",
    "NoMatchAction",
    "Policy",
    "PolicySet",
    "SbomRequirements",
    "TierRules",
    "compile_model_policy",
    "compile_policy",
    "tier_rank",
]

AuthorityKind = Literal["key", "certificateChain", "keyless"]
NoMatchAction = Literal["allow", "warn", "deny"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Authority:
    """Who may sign: exactly one of an EC public key, a certificate chain, or a Sigstore keyless identity."""

    name: str
    kind: AuthorityKind
    public_key: str = ""
    certificates: str = ""
    identity: str = ""
    identity_regexp: str = ""
    issuer: str = ""
    trust_config: str = ""

    @property
    def fingerprint(self) -> str:
        """A digest of the trust material: the cache key part that changes when the authority does."""
        material = "\0".join(
            (self.kind, self.public_key, self.certificates, self.identity, self.identity_regexp, self.issuer)
        )
        return hashlib.sha256(material.encode()).hexdigest()

    @property
    def trust_root_version(self) -> str:
        """Which trust root keyless verification uses: the supplied config's digest, or the shipped root."""
        if self.kind != "keyless":
            return "-"
        if self.trust_config:
            return "config:" + hashlib.sha256(self.trust_config.encode()).hexdigest()[:16]
        return "public-good"

    def describe(self) -> str:
        if self.kind == "keyless":
            who = self.identity or f"/{self.identity_regexp}/"
            return f"{self.name} (keyless {who} from {self.issuer})"
        return f"{self.name} ({'EC public key' if self.kind == 'key' else 'certificate chain'})"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for key, operator, values in self.match_expressions:
            present = key in labels
            ok = {
                "In": present and labels[key] in values,
                "NotIn": not present or labels[key] not in values,
                "Exists": present,
                "DoesNotExist": not present,
            }[operator]
            if not ok:
                return False
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class SbomRequirements:
    required: bool = True
    formats: tuple[str, ...] = ()
    bind_to_digest: bool = True
    allow_name_binding: bool = False
    denied_licenses: tuple[str, ...] = ()
    required_model_card_fields: tuple[str, ...] = ()
    require_signature: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowList:
    """``None`` allows everything of its kind; an empty tuple allows nothing."""

    storage_uris: tuple[str, ...] | None = None
    runtimes: tuple[str, ...] | None = None
    images: tuple[str, ...] | None = None
    formats: tuple[str, ...] | None = None


RISK_TIERS = ("minimal", "limited", "high", "prohibited")  # lowest first: a tier's index is its rank


def tier_rank(tier: str) -> int:
    """How high ``tier`` is (-1 for no tier or an unknown word, which never raises anything)."""
    return RISK_TIERS.index(tier) if tier in RISK_TIERS else -1


@dataclass(frozen=True, slots=True, kw_only=True)
class TierRules:
    deny: bool = False
    require_approval: bool = False
    required_annotations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ComplianceRules:
    """What the EU AI Act risk tiers demand under this policy, and who may approve."""

    require_risk_label: bool = True
    minimum_tier: str = ""  # the tier this policy assigns to what it selects; '' assigns none
    tiers: Mapping[str, TierRules] = field(default_factory=dict)
    approver_users: tuple[str, ...] = ()
    approver_groups: tuple[str, ...] = ()

    def may_approve(self, username: str, groups: Sequence[str]) -> bool:
        return username in self.approver_users or bool(set(groups) & set(self.approver_groups))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    name: str
    revision: str
    mode: Mode = "enforce"
    namespace_selector: LabelSelector | None = None
    model_globs: tuple[str, ...] = ()
    authorities: tuple[Authority, ...]
    threshold: int = 1
    sbom: SbomRequirements = field(default_factory=SbomRequirements)
    allow: AllowList = field(default_factory=AllowList)
    rego_packages: tuple[str, ...] = ()
    rego_parameters: Mapping[str, Any] = field(default_factory=dict)
    compliance: ComplianceRules | None = None
    namespace: str = ""  # set for a team's namespaced ModelPolicy; empty for a ClusterModelPolicy
    on_violation: Literal["degrade", "scaleToZero"] = "degrade"


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every compiled policy, the ones that failed to compile (by name, with the reason), and one revision."""

    policies: tuple[Policy, ...] = ()
    broken: Mapping[str, str] = field(default_factory=dict)
    no_match: NoMatchAction = "deny"
    revision: str = field(init=False, default="")  # computed once: every decision's audit line names it

    def __post_init__(self) -> None:
        parts = sorted(f"{p.name}@{p.revision}" for p in self.policies) + sorted(self.broken)
        object.__setattr__(self, "revision", hashlib.sha256("|".join(parts).encode()).hexdigest()[:16])


# -- compilation ---------------------------------------------------------------------------------------------


def _strings(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInputError(f"{path}: expected a list of strings, got {value!r}")
    return tuple(value)


def _optional_strings(spec: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    return _strings(spec[key], f"{path}.{key}") if key in spec and spec[key] is not None else None


def _regexp(pattern: str, path: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidInputError(f"{path}: not a valid regular expression ({exc}): {pattern!r}") from exc
    return pattern


def _authority(raw: Any, path: str) -> Authority:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise InvalidInputError(f"{path}.name: expected a non-empty name")
    kinds = [kind for kind in ("key", "certificateChain", "keyless") if raw.get(kind) is not None]
    if len(kinds) != 1:
        raise InvalidInputError(f"{path}: set exactly one of key, certificateChain or keyless, got {kinds or 'none'}")
    name = raw["name"]
    if kinds[0] == "key":
        pem = str(raw["key"].get("publicKey", ""))
        if "BEGIN PUBLIC KEY" not in pem:
            raise InvalidInputError(f"{path}.key.publicKey: expected a PEM public key (BEGIN PUBLIC KEY)")
        return Authority(name=name, kind="key", public_key=pem)
    if kinds[0] == "certificateChain":
        pem = str(raw["certificateChain"].get("certificates", ""))
        if "BEGIN CERTIFICATE" not in pem:
            raise InvalidInputError(f"{path}.certificateChain.certificates: expected PEM certificates")
        return Authority(name=name, kind="certificateChain", certificates=pem)
    keyless = raw["keyless"]
    identity, regexp = str(keyless.get("identity") or ""), str(keyless.get("identityRegExp") or "")
    if bool(identity) == bool(regexp):
        raise InvalidInputError(f"{path}.keyless: set exactly one of identity or identityRegExp")
    issuer = str(keyless.get("issuer") or "")
    if not issuer:
        raise InvalidInputError(f"{path}.keyless.issuer: expected the OIDC issuer URL")
    trust_config = str(keyless.get("trustConfig") or "")
    if trust_config:
        try:
            json.loads(trust_config)
        except ValueError as exc:
            raise InvalidInputError(f"{path}.keyless.trustConfig: not valid JSON ({exc})") from exc
    return Authority(
        name=name,
        kind="keyless",
        identity=identity,
        identity_regexp=_regexp(regexp, f"{path}.keyless.identityRegExp") if regexp else "",
        issuer=issuer,
        trust_config=trust_config,
    )


def _selector(raw: Any, path: str) -> LabelSelector:
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{path}: expected a label selector object")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise InvalidInputError(f"{path}.matchLabels: expected a map of strings")
    expressions = []
    for i, expr in enumerate(raw.get("matchExpressions") or []):
        operator = expr.get("operator") if isinstance(expr, Mapping) else None
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise InvalidInputError(f"{path}.matchExpressions[{i}].operator: got {operator!r}")
        values = _strings(expr.get("values"), f"{path}.matchExpressions[{i}].values")
        if operator in ("In", "NotIn") and not values:
            raise InvalidInputError(f"{path}.matchExpressions[{i}].values: {operator} needs at least one value")
        expressions.append((str(expr.get("key", "")), str(operator), values))
    return LabelSelector({str(k): str(v) for k, v in labels.items()}, tuple(expressions))


def compile_policy(obj: Mapping[str, Any]) -> Policy:
    """A ``Policy`` from a ClusterModelPolicy object, or ``InvalidInputError`` naming the wrong field."""
    return _compile(obj, kind="ClusterModelPolicy")


def compile_model_policy(obj: Mapping[str, Any]) -> Policy:
    """A team's namespaced ModelPolicy: the same rules, authorities optional, bound to its namespace."""
    return _compile(obj, kind="ModelPolicy")


def _compile(obj: Mapping[str, Any], *, kind: str) -> Policy:
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "")
    spec = obj.get("spec")
    if not name or not isinstance(spec, Mapping):
        raise InvalidInputError(f"{kind} {name or '?'}: expected metadata.name and a spec object")
    namespace = str(metadata.get("namespace") or "") if kind == "ModelPolicy" else ""
    if namespace:
        name = f"{namespace}/{name}"
    where = f"{kind} {name}: spec"
    raw_authorities = spec.get("authorities")
    team_without_signers = kind == "ModelPolicy" and raw_authorities is None
    if not team_without_signers and (
        not isinstance(raw_authorities, Sequence) or isinstance(raw_authorities, str) or not raw_authorities
    ):
        raise InvalidInputError(f"{where}.authorities: expected at least one authority (an empty list never passes)")
    authorities = tuple(_authority(a, f"{where}.authorities[{i}]") for i, a in enumerate(raw_authorities or ()))
    names = [a.name for a in authorities]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{where}.authorities: names must be unique, got {names}")
    threshold = spec.get("threshold", 1)
    if not isinstance(threshold, int) or not 1 <= threshold <= max(len(authorities), 1):
        raise InvalidInputError(
            f"{where}.threshold: got {threshold!r}, expected 1 to {len(authorities)} (the number of authorities)"
        )
    mode = spec.get("mode", "enforce")
    if mode not in ("enforce", "warn"):
        raise InvalidInputError(f"{where}.mode: got {mode!r}, expected enforce or warn")
    selector = spec.get("selector") or {}
    globs = _strings(selector.get("models"), f"{where}.selector.models")
    raw_ns = selector.get("namespaceSelector")
    sbom = spec.get("sbom") or {}
    allow = spec.get("allow") or {}
    rego = spec.get("rego") or {}
    return Policy(
        name=name,
        namespace=namespace,
        revision=str(metadata.get("resourceVersion") or metadata.get("generation") or "0"),
        mode=mode,
        namespace_selector=_selector(raw_ns, f"{where}.selector.namespaceSelector") if raw_ns is not None else None,
        model_globs=globs,
        authorities=authorities,
        threshold=threshold,
        sbom=SbomRequirements(
            required=bool(sbom.get("required", True)) if sbom else False,
            formats=_strings(sbom.get("formats"), f"{where}.sbom.formats"),
            bind_to_digest=bool(sbom.get("bindToDigest", True)),
            allow_name_binding=bool(sbom.get("allowNameBinding", False)),
            denied_licenses=_strings(sbom.get("deniedLicenses"), f"{where}.sbom.deniedLicenses"),
            required_model_card_fields=_strings(
                sbom.get("requiredModelCardFields"), f"{where}.sbom.requiredModelCardFields"
            ),
            require_signature=bool(sbom.get("requireSignature", False)),
        ),
        allow=AllowList(
            storage_uris=_optional_strings(allow, "storageUris", f"{where}.allow"),
            runtimes=_optional_strings(allow, "runtimes", f"{where}.allow"),
            images=_optional_strings(allow, "images", f"{where}.allow"),
            formats=_optional_strings(allow, "formats", f"{where}.allow"),
        ),
        rego_packages=_strings(rego.get("packages"), f"{where}.rego.packages"),
        rego_parameters=dict(rego.get("parameters") or {}),
        compliance=_compliance(spec.get("compliance"), f"{where}.compliance"),
        on_violation="scaleToZero" if spec.get("onViolation") == "scaleToZero" else "degrade",
    )


def _compliance(raw: Any, path: str) -> ComplianceRules | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{path}: expected an object")
    tiers: dict[str, TierRules] = {}
    for tier, rules in (raw.get("tiers") or {}).items():
        if tier not in RISK_TIERS:
            raise InvalidInputError(f"{path}.tiers: got tier {tier!r}, expected one of {', '.join(RISK_TIERS)}")
        if not isinstance(rules, Mapping):
            raise InvalidInputError(f"{path}.tiers.{tier}: expected an object")
        tiers[tier] = TierRules(
            deny=bool(rules.get("deny", False)),
            require_approval=bool(rules.get("requireApproval", False)),
            required_annotations=_strings(rules.get("requiredAnnotations"), f"{path}.tiers.{tier}.requiredAnnotations"),
        )
    minimum = raw.get("minimumTier")
    if minimum is not None and minimum not in RISK_TIERS:
        raise InvalidInputError(f"{path}.minimumTier: got {minimum!r}, expected one of {', '.join(RISK_TIERS)}")
    approvers = raw.get("approvers") or {}
    rules = ComplianceRules(
        require_risk_label=bool(raw.get("requireRiskLabel", True)),
        minimum_tier=str(minimum or ""),
        tiers=tiers,
        approver_users=_strings(approvers.get("users"), f"{path}.approvers.users"),
        approver_groups=_strings(approvers.get("groups"), f"{path}.approvers.groups"),
    )
    if any(t.require_approval for t in tiers.values()) and not (rules.approver_users or rules.approver_groups):
        raise InvalidInputError(f"{path}.approvers: a tier requires approval, so name at least one user or group")
    return rules
