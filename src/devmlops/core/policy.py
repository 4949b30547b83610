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

from devmlops.core import manifests as wire
from devmlops.core.model import Mode
from devmlops.errors import InvalidInputError

__all__ = [
    "RISK_TIERS",
    "AllowList",
    "Authority",
    "AuthorityKind",
    "ComplianceRules",
    "EvidenceRequirement",
    "LabelSelector",
    "NoMatchAction",
    "Policy",
    "PolicySet",
    "RegistryRules",
    "SbomRequirements",
    "TierRules",
    "compile_model_policy",
    "compile_policy",
    "devmlops_image_demanded",
    "image_authorities",
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
        """A digest of the trust material: the cache key part that changes when the authority does, and what the
        shell keys a verified image signature by. The trust root is part of it: two policies trusting one keyless
        identity under different roots are two authorities (a signature verified under one root counted for both)."""
        material = "\0".join(
            (
                self.kind,
                self.public_key,
                self.certificates,
                self.identity,
                self.identity_regexp,
                self.issuer,
                self.trust_root_version,
            )
        )
        return hashlib.sha256(material.encode()).hexdigest()

    @property
    def trust_root_version(self) -> str:
        """Which trust root keyless verification uses: the supplied config's digest, or the shipped root."""
        if self.kind != "keyless":
            return "-"
        if self.trust_config:
            return "config:" + hashlib.sha256(self.trust_config.encode()).hexdigest()  # the whole digest: a cache key
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
    """``None`` allows everything of its kind; an empty tuple allows nothing. ``s3_endpoints`` (globs over the S3
    endpoint a KServe storage initializer is given, ``host[:port]``) is never ``None``: absent, it allows no endpoint
    but the AWS default (core/storageinit.py)."""

    storage_uris: tuple[str, ...] | None = None
    runtimes: tuple[str, ...] | None = None
    images: tuple[str, ...] | None = None
    formats: tuple[str, ...] | None = None
    s3_endpoints: tuple[str, ...] = ()


RISK_TIERS = ("minimal", "limited", "high", "prohibited")  # lowest first: a tier's index is its rank


def tier_rank(tier: str) -> int:
    """How high ``tier`` is (-1 for no tier or an unknown word, which never raises anything)."""
    return RISK_TIERS.index(tier) if tier in RISK_TIERS else -1


@dataclass(frozen=True, slots=True, kw_only=True)
class TierRules:
    deny: bool = False
    require_approval: bool = False
    required_annotations: tuple[str, ...] = ()
    required_evidence: tuple[str, ...] | None = None  # predicate types; None: the tier's default (high: three)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceRequirement:
    """A signed attestation a model must carry: its predicate type, who may sign it (the policy's own authorities
    when the requirement names none), how old it may be, and the Rego package that judges its predicate."""

    name: str
    predicate_type: str
    authorities: tuple[Authority, ...]
    max_age_seconds: int | None = None
    max_age: str = ""  # as written, for messages
    package: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    tiers: tuple[str, ...] = ()  # only models of these effective tiers; () every model
    implied_by: str = ""  # set when a risk tier demands it rather than the policy's evidence list

    def describe(self) -> str:
        signers = ", ".join(a.name for a in self.authorities)
        age = f", at most {self.max_age} old" if self.max_age else ""
        return f"'{self.name}' ({self.predicate_type}, signed by {signers}{age})"


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
class RegistryRules:
    """A policy's registry demands: a registry entry at all, one of these aliases, none of these tags (``key`` or
    ``key=value``)."""

    required: bool = False
    required_aliases: tuple[str, ...] = ()
    forbidden_tags: tuple[str, ...] = ()


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
    evidence: tuple[EvidenceRequirement, ...] = ()
    namespace: str = ""  # set for a team's namespaced ModelPolicy; empty for a ClusterModelPolicy
    on_violation: Literal["degrade", "scaleToZero"] = "degrade"
    guard: wire.GuardPolicy | None = None  # the serving guard this policy demands (ClusterModelPolicy only)
    # ClusterServingRuntimes a cluster admin declares to run MLServer (spec.guard.mlserverRuntimes; ClusterModelPolicy
    # only): the KServe runtimes a guard can be put in front of (core/gates/guard.py).
    mlserver_runtimes: tuple[str, ...] = ()
    registry: RegistryRules | None = None  # what it demands of registered models (spec.registry)
    image_authorities: tuple[
        Authority, ...
    ] = ()  # authorities one of which must sign the runtime image (spec.imageSignatures)
    signs_devmlops_image: bool = False  # ... and devmlops's own image, the guard's and storage initializer's


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


def devmlops_image_demanded(policies: PolicySet) -> bool:
    """Whether any policy demands devmlops's own image signed (``imageSignatures.devmlopsImage``): only then does the
    shell look its signatures up."""
    return any(policy.signs_devmlops_image for policy in policies.policies)


def image_authorities(policies: PolicySet) -> tuple[Authority, ...]:
    """Every policy's image keys, each once: what the shell checks a runtime image's signatures against."""
    seen: dict[str, Authority] = {}
    for policy in policies.policies:
        for authority in policy.image_authorities:
            seen.setdefault(authority.fingerprint, authority)
    return tuple(seen.values())


# -- compilation ---------------------------------------------------------------------------------------------


def _regexp(pattern: str, path: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidInputError(f"{path}: not a valid regular expression ({exc}): {pattern!r}") from exc
    return pattern


def _tuple(values: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(values or ())


def _optional(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _authority(raw: wire.AuthoritySpec, path: str) -> Authority:
    if raw.key is not None:
        if "BEGIN PUBLIC KEY" not in raw.key.public_key:
            raise InvalidInputError(f"{path}.key.publicKey: expected a PEM public key (BEGIN PUBLIC KEY)")
        return Authority(name=raw.name, kind="key", public_key=raw.key.public_key)
    if raw.certificate_chain is not None:
        if "BEGIN CERTIFICATE" not in raw.certificate_chain.certificates:
            raise InvalidInputError(f"{path}.certificateChain.certificates: expected PEM certificates")
        return Authority(name=raw.name, kind="certificateChain", certificates=raw.certificate_chain.certificates)
    keyless = raw.keyless
    assert keyless is not None  # the spec model demands exactly one of the three
    if not keyless.issuer:
        raise InvalidInputError(f"{path}.keyless.issuer: expected the OIDC issuer URL")
    if keyless.trust_config:
        try:
            json.loads(keyless.trust_config)
        except ValueError as exc:
            raise InvalidInputError(f"{path}.keyless.trustConfig: not valid JSON ({exc})") from exc
    regexp = keyless.identity_reg_exp or ""
    return Authority(
        name=raw.name,
        kind="keyless",
        identity=keyless.identity or "",
        identity_regexp=_regexp(regexp, f"{path}.keyless.identityRegExp") if regexp else "",
        issuer=keyless.issuer,
        trust_config=keyless.trust_config or "",
    )


def _selector(raw: wire.NamespaceSelector, path: str) -> LabelSelector:
    expressions = []
    for i, expr in enumerate(raw.match_expressions or ()):
        values = _tuple(expr.values)
        if expr.operator in ("In", "NotIn") and not values:
            raise InvalidInputError(f"{path}.matchExpressions[{i}].values: {expr.operator} needs at least one value")
        expressions.append((expr.key, str(expr.operator), values))
    return LabelSelector(dict(raw.match_labels or {}), tuple(expressions))


def compile_policy(obj: Mapping[str, Any]) -> Policy:
    """A ``Policy`` from a ClusterModelPolicy object, or ``InvalidInputError`` naming the wrong field."""
    name, _namespace, revision = _identity(obj, "ClusterModelPolicy")
    spec = wire.parse_cluster_model_policy(obj.get("spec"), name)
    selector = spec.selector or wire.Selector()
    raw_ns = selector.namespace_selector
    where = f"ClusterModelPolicy {name}: spec"
    return _policy(
        spec,
        name=name,
        revision=revision,
        where=where,
        namespace_selector=_selector(raw_ns, f"{where}.selector.namespaceSelector") if raw_ns is not None else None,
        model_globs=_tuple(selector.models),
        on_violation=spec.on_violation,
    )


def compile_model_policy(obj: Mapping[str, Any]) -> Policy:
    """A team's namespaced ModelPolicy: the same rules, authorities optional, bound to its namespace."""
    name, namespace, revision = _identity(obj, "ModelPolicy")
    spec = wire.parse_model_policy(obj.get("spec"), name)
    if spec.authorities is not None and not spec.authorities:
        raise InvalidInputError(
            f"ModelPolicy {name}: spec.authorities: expected at least one authority, or none at all (an empty list "
            "never passes)"
        )
    return _policy(
        spec,
        name=name,
        namespace=namespace,
        revision=revision,
        where=f"ModelPolicy {name}: spec",
        model_globs=_tuple(spec.selector.models if spec.selector else None),
    )


def _identity(obj: Mapping[str, Any], kind: str) -> tuple[str, str, str]:
    """``(name, namespace, revision)``; a ModelPolicy's name is ``namespace/name``."""
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{kind} ?: metadata.name: found {name!r}, expected a non-empty name")
    namespace = metadata.get("namespace") if kind == "ModelPolicy" else ""
    namespace = namespace if isinstance(namespace, str) else ""
    revision = str(metadata.get("resourceVersion") or metadata.get("generation") or "0")
    return (f"{namespace}/{name}" if namespace else name), namespace, revision


def _policy(
    spec: wire.ClusterModelPolicySpec | wire.ModelPolicySpec,
    *,
    name: str,
    revision: str,
    where: str,
    namespace: str = "",
    namespace_selector: LabelSelector | None = None,
    model_globs: tuple[str, ...] = (),
    on_violation: Literal["degrade", "scaleToZero"] = "degrade",
) -> Policy:
    authorities = tuple(_authority(a, f"{where}.authorities[{i}]") for i, a in enumerate(spec.authorities or ()))
    names = [a.name for a in authorities]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{where}.authorities: names must be unique, got {names}")
    threshold = spec.threshold or 1
    if threshold > max(len(authorities), 1):
        raise InvalidInputError(
            f"{where}.threshold: got {threshold!r}, expected 1 to {len(authorities)} (the number of authorities)"
        )
    sbom, allow, rego = spec.sbom, spec.allow or wire.AllowSpec(), spec.rego or wire.RegoSpec()
    return Policy(
        name=name,
        namespace=namespace,
        revision=revision,
        mode=spec.mode,
        namespace_selector=namespace_selector,
        model_globs=model_globs,
        authorities=authorities,
        threshold=threshold,
        sbom=SbomRequirements(
            # A signed SBOM is required only where an SBOM is: without this, dropping the SBOM dropped its stated tier.
            required=(sbom.required or sbom.require_signature) if sbom else False,
            formats=_tuple(sbom.formats if sbom else None),
            bind_to_digest=sbom.bind_to_digest if sbom else True,
            allow_name_binding=sbom.allow_name_binding if sbom else False,
            denied_licenses=_tuple(sbom.denied_licenses if sbom else None),
            required_model_card_fields=_tuple(sbom.required_model_card_fields if sbom else None),
            require_signature=sbom.require_signature if sbom else False,
        ),
        allow=AllowList(
            storage_uris=_optional(allow.storage_uris),
            runtimes=_optional(allow.runtimes),
            images=_optional(allow.images),
            formats=_optional(allow.formats),
            s3_endpoints=_tuple(allow.s3_endpoints),
        ),
        rego_packages=_tuple(rego.packages),
        rego_parameters=dict(rego.parameters or {}),
        compliance=_compliance(spec.compliance, f"{where}.compliance"),
        evidence=_evidence(spec.evidence or (), authorities, f"{where}.evidence"),
        on_violation=on_violation,
        guard=spec.guard if isinstance(spec, wire.ClusterModelPolicySpec) else None,
        mlserver_runtimes=_mlserver_runtimes(spec, where),
        registry=_registry(spec.registry),
        image_authorities=_image_authorities(spec, where),
        signs_devmlops_image=isinstance(spec, wire.ClusterModelPolicySpec)
        and spec.image_signatures is not None
        and spec.image_signatures.devmlops_image,
    )


def _image_authorities(spec: wire.ClusterModelPolicySpec | wire.ModelPolicySpec, where: str) -> tuple[Authority, ...]:
    raw = spec.image_signatures if isinstance(spec, wire.ClusterModelPolicySpec) else None
    if raw is None:
        return ()
    authorities = [_authority(a, f"{where}.imageSignatures.authorities[{i}]") for i, a in enumerate(raw.authorities)]
    names = [a.name for a in authorities]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{where}.imageSignatures.authorities: names must be unique, got {names}")
    return tuple(authorities)


def _mlserver_runtimes(spec: wire.ClusterModelPolicySpec | wire.ModelPolicySpec, where: str) -> tuple[str, ...]:
    """The ClusterServingRuntimes declared to run MLServer. A team's ModelPolicy has no such field (its parser refuses
    ``guard``): a namespace editor writes it, and the declaration decides where a guard is trusted to be the only way
    in."""
    guard = spec.guard if isinstance(spec, wire.ClusterModelPolicySpec) else None
    names = tuple(guard.mlserver_runtimes or ()) if guard is not None else ()
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"{where}.guard.mlserverRuntimes: names must be unique, got {repeated} more than once")
    return names


def _registry(raw: wire.RegistryPolicy | None) -> RegistryRules | None:
    if raw is None:
        return None
    return RegistryRules(
        required=raw.required or bool(raw.required_aliases),
        required_aliases=_tuple(raw.required_aliases),
        forbidden_tags=_tuple(raw.forbidden_tags),
    )


def _compliance(raw: wire.ComplianceSpec | None, path: str) -> ComplianceRules | None:
    if raw is None:
        return None
    tiers: dict[str, TierRules] = {
        tier: TierRules(
            deny=rules.deny,
            require_approval=rules.require_approval,
            required_annotations=_tuple(rules.required_annotations),
            required_evidence=(
                None if rules.required_evidence is None else tuple(predicate_uri(t) for t in rules.required_evidence)
            ),
        )
        for tier, rules in (raw.tiers or {}).items()
    }
    approvers = raw.approvers or wire.Approvers()
    compiled = ComplianceRules(
        require_risk_label=raw.require_risk_label,
        minimum_tier=raw.minimum_tier or "",
        tiers=tiers,
        approver_users=_tuple(approvers.users),
        approver_groups=_tuple(approvers.groups),
    )
    if any(t.require_approval for t in tiers.values()) and not (compiled.approver_users or compiled.approver_groups):
        raise InvalidInputError(f"{path}.approvers: a tier requires approval, so name at least one user or group")
    return compiled


# Short names for devmlops's predicate types (core/attestation.py holds the URIs; repeated here to keep policy.py free
# of the attestation reader): a policy may write `fairness` for https://devmlops.io/attestation/fairness/v1.
_PREDICATE_SHORT_NAMES = ("evaluation", "fairness", "robustness", "scan", "dataset-audit")
_DURATION = re.compile(r"([0-9]+)(s|m|h|d)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def predicate_uri(text: str) -> str:
    """A short name (``fairness``) as its predicate type URI; anything else as written."""
    return f"https://devmlops.io/attestation/{text}/v1" if text in _PREDICATE_SHORT_NAMES else text


def duration_seconds(text: str) -> int:
    """``30d``, ``12h``, ``1h30m``: the schema's pattern has already checked the shape."""
    return sum(int(number) * _SECONDS[unit] for number, unit in _DURATION.findall(text))


def _evidence(
    raw: Sequence[wire.EvidenceRequirementSpec], policy_authorities: tuple[Authority, ...], path: str
) -> tuple[EvidenceRequirement, ...]:
    requirements = []
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        own = tuple(_authority(a, f"{where}.authorities[{i}]") for i, a in enumerate(item.authorities or ()))
        if item.authorities is not None and not own:
            raise InvalidInputError(
                f"{where}.authorities: empty; name at least one, or leave it out to trust the policy's own authorities"
            )
        names = [a.name for a in own]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"{where}.authorities: names must be unique, got {names}")
        authorities = own or policy_authorities
        if not authorities:
            raise InvalidInputError(
                f"{where}.authorities: the policy names no authorities, so the requirement must name who may sign"
            )
        predicate_type = predicate_uri(item.predicate_type)
        if not re.match(r"^[a-z][a-z0-9+.-]*://", predicate_type):
            raise InvalidInputError(
                f"{where}.predicateType: got {item.predicate_type!r}, expected a URI or one of "
                f"{', '.join(_PREDICATE_SHORT_NAMES)}"
            )
        seconds = duration_seconds(item.max_age) if item.max_age else None
        if item.tiers is not None and not item.tiers:
            raise InvalidInputError(f"{where}.tiers: empty; name at least one tier, or leave it out for every model")
        if seconds == 0:
            raise InvalidInputError(f"{where}.maxAge: got {item.max_age!r}, expected a positive duration")
        requirements.append(
            EvidenceRequirement(
                name=item.name,
                predicate_type=predicate_type,
                authorities=authorities,
                max_age_seconds=seconds,
                max_age=item.max_age or "",
                tiers=tuple(item.tiers or ()),
                package=item.conditions.package if item.conditions else "",
                parameters=dict(item.conditions.parameters or {}) if item.conditions else {},
            )
        )
    names = [r.name for r in requirements]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{path}: requirement names must be unique, got {names}")
    return tuple(requirements)
