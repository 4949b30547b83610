"""Typed devmlops objects, parsed once at the edge: ModelDeployment, ClusterModelPolicy, ModelPolicy, ModelApproval.

Every shell (webhook, operator, CLI) parses an object with ``parse_*`` before it decides anything; the core then
reads typed fields, never ``.get(...) or {}`` chains. A malformed object is an ``InvalidInputError`` that names each
wrong field, what was found there and what was expected, so it becomes a denial or a CLI error, never an exception
from inside. Parsing is strict: a string "false" is not a boolean, an unknown field is a typo to report (the API
server prunes unknown fields before devmlops sees them; ``devmlops check`` does not), and an enum word is one of its
words. ``tests/unit/core/test_manifests.py`` walks the CRD schemas in ``crds/`` beside these models so the two agree.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from devmlops.errors import InvalidInputError

__all__ = [
    "AuthoritySpec",
    "ClusterModelPolicySpec",
    "Drift",
    "DriftPolicy",
    "EvidenceRequirementSpec",
    "Metadata",
    "MlflowRef",
    "ModelApproval",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelPolicySpec",
    "ModelRef",
    "Registry",
    "RegistryPolicy",
    "Runtime",
    "Source",
    "parse_cluster_model_policy",
    "parse_model_approval",
    "parse_model_deployment",
    "parse_model_policy",
]

_Model = TypeVar("_Model", bound=BaseModel)

DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$"
MODEL_URI_PATTERN = r"^(s3|gs|hf|pvc|oci|https)://[^\s]+$"
MODEL_FORMAT_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
MLFLOW_VERSION_PATTERN = r"^[1-9][0-9]{0,17}$"
MLFLOW_ALIAS_PATTERN = r"^[A-Za-z0-9_-]+$"
REGO_PACKAGE_PATTERN = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"
REQUIREMENT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
DURATION_PATTERN = r"^([0-9]{1,6}(s|m|h|d))+$"
RUNTIME_NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"  # a (Cluster)ServingRuntime's name: a DNS subdomain
RiskTier = Literal["minimal", "limited", "high", "prohibited"]


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (``2.0``, as some tools write integers) is that integer; ``"2"``, ``true``
    and ``2.5`` stay what they are and fail as the strict integer they are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integral = BeforeValidator(_integral)  # last in an Annotated, after Strict() and the bounds (the schema keeps them)
Integer = Annotated[int, Strict(), Integral]


class _Spec(BaseModel):
    """A part of a spec: camelCase on the wire, immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


def _exactly_one(obj: BaseModel, fields: tuple[str, ...], words: str) -> None:
    if sum(getattr(obj, name) is not None for name in fields) != 1:
        raise ValueError(f"set exactly one of {words}")


# -- ModelDeployment ----------------------------------------------------------------------------------------------


class Metadata(BaseModel):
    """What devmlops reads of ``metadata``; the API server owns the rest, which is kept but not typed."""

    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)

    name: StrictStr = ""
    namespace: StrictStr = ""
    uid: StrictStr = ""
    generation: Integer = 0
    labels: dict[str, StrictStr] = Field(default_factory=dict)
    annotations: dict[str, StrictStr] = Field(default_factory=dict)


class KeyRef(_Spec):
    name: Annotated[StrictStr, Field(min_length=1, max_length=253)]
    key: Annotated[StrictStr, Field(min_length=1, max_length=253)]


_SOURCES = "inline, configMapKeyRef or secretKeyRef"


class Source(_Spec):
    """A document given inline or by reference to a key of a ConfigMap or a Secret of the same namespace."""

    inline: Annotated[StrictStr, Field(max_length=262144)] | None = None
    config_map_key_ref: KeyRef | None = None
    secret_key_ref: KeyRef | None = None

    @model_validator(mode="after")
    def _one(self) -> Source:
        _exactly_one(self, ("inline", "config_map_key_ref", "secret_key_ref"), _SOURCES)
        return self


class MlflowRef(_Spec):
    """A registered model version in the MLflow model registry the cluster admins configured, named by its number
    or by one of its aliases (``champion``): exactly one of the two."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    version: Annotated[StrictStr, Field(pattern=MLFLOW_VERSION_PATTERN)] | None = None
    alias: Annotated[StrictStr, Field(min_length=1, max_length=255, pattern=MLFLOW_ALIAS_PATTERN)] | None = None

    @model_validator(mode="after")
    def _one(self) -> MlflowRef:
        _exactly_one(self, ("version", "alias"), "registry.mlflow.version or registry.mlflow.alias")
        return self


class Registry(_Spec):
    """Where the model is registered; devmlops resolves it and binds spec.model.uri and digest to what it finds."""

    mlflow: MlflowRef


class ModelRef(_Spec):
    name: Annotated[StrictStr, Field(min_length=1, max_length=253, pattern=MODEL_NAME_PATTERN)]
    version: Annotated[StrictStr, Field(max_length=128)] | None = None
    uri: Annotated[StrictStr, Field(max_length=2048, pattern=MODEL_URI_PATTERN)]
    format: Annotated[StrictStr, Field(max_length=63, pattern=MODEL_FORMAT_PATTERN)] | None = None
    digest: Annotated[StrictStr, Field(pattern=DIGEST_PATTERN)]
    registry: Registry | None = None


class Runtime(_Spec):
    kind: Literal["kserve", "triton"]
    image: Annotated[StrictStr, Field(max_length=512)] | None = None
    serving_runtime: Annotated[StrictStr, Field(max_length=253)] | None = None
    replicas: Annotated[int, Strict(), Field(ge=0, le=1000), Integral] = 1
    resources: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _pinned(self) -> Runtime:
        if self.kind == "triton" and "@sha256:" not in (self.image or ""):
            raise ValueError("runtime.image is required for kind triton, pinned by digest (image@sha256:...)")
        return self


class Sbom(_Spec):
    format: Literal["cyclonedx", "spdx"] | None = None
    document: Source
    signature: Source | None = None


Percent = Annotated[int, Strict(), Field(ge=1, le=99), Integral]
Rate = Annotated[float, Strict(), Field(ge=0, le=1)]


class Analysis(_Spec):
    """What a canary must show over each step (its guard's metrics, in Prometheus) to be promoted: a measured figure
    above its bound rolls the new version back; a bound left out is not checked."""

    max_error_rate: Rate | None = 0.05  # answers the guard counts as errors (the model server's 5xx included)
    max_blocked_rate: Rate | None = None  # requests the guard refused (limits, schema, prompt checks)
    max_p99_latency_seconds: Annotated[float, Strict(), Field(ge=0, le=600)] | None = None
    max_drift_psi: Annotated[float, Strict(), Field(ge=0, le=100)] | None = (
        None  # the largest per-feature PSI (signed baseline)
    )
    min_requests: Annotated[int, Strict(), Field(ge=1, le=1_000_000), Integral] = 20  # fewer: the step waits


class Canary(_Spec):
    """A new version serves a share of the traffic first (the stable version's guard forwards it), step by step."""

    traffic_percent: Percent  # the first step's share
    steps: Annotated[list[Percent], Field(min_length=1, max_length=10)] | None = None  # default [trafficPercent]
    step_seconds: Annotated[int, Strict(), Field(ge=5, le=86_400), Integral] = 60  # the analysis window per step
    ready_seconds: Annotated[int, Strict(), Field(ge=10, le=86_400), Integral] = 600  # to become ready, or roll back
    analysis: Analysis = Analysis()

    @property
    def weights(self) -> tuple[int, ...]:
        return tuple(self.steps or (self.traffic_percent,))

    @field_validator("steps")
    @classmethod
    def _rising(cls, value: list[int] | None) -> list[int] | None:
        if value and any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"rollout.canary.steps must rise step by step, found {value}")
        return value


class Rollout(_Spec):
    strategy: Literal["direct", "canary"] = "direct"
    canary: Canary | None = None

    @model_validator(mode="after")
    def _canary(self) -> Rollout:
        if self.strategy == "canary" and self.canary is None:
            raise ValueError("rollout.canary is required when rollout.strategy is canary")
        return self


def _compiles(patterns: list[str] | None) -> list[str] | None:
    for index, pattern in enumerate(patterns or ()):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"blockedPatterns[{index}] is not a regular expression: {exc}") from None
    return patterns


class RateLimit(_Spec):
    """A token bucket: ``requestsPerSecond`` refills it, ``burst`` is its size."""

    requests_per_second: Annotated[int, Strict(), Field(ge=1, le=1_000_000), Integral]
    burst: Annotated[int, Strict(), Field(ge=1, le=1_000_000), Integral]


class TextChecks(_Spec):
    """What the guard looks for in prompts (input) or completions (output) of a text endpoint."""

    injection: StrictBool | None = None  # prompt-injection and jailbreak phrasing
    secrets: StrictBool | None = None  # credentials (keys, tokens, private keys)
    pii: StrictBool | None = None  # e-mail addresses, payment card numbers
    blocked_patterns: (
        Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=512)]], Field(max_length=64)] | None
    ) = None

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        return _compiles(value)


PsiThreshold = Annotated[float, Strict(), Field(ge=0.01, le=10)]


class Drift(_Spec):
    """Input drift monitoring: PSI per feature of a sliding sample of the inputs against the baseline in the model's
    signed evaluation evidence (docs/guard.md). Without a signed baseline the guard monitors nothing."""

    threshold: PsiThreshold = 0.2  # the PSI above which a feature has drifted (alerts, rollout analysis)
    sample_size: Annotated[int, Strict(), Field(ge=10, le=10_000), Integral] = 1000  # rows in the sliding sample


class Guard(_Spec):
    """The serving guard in front of the model server: every request to the model passes it."""

    rate_limit: RateLimit | None = None  # all clients together
    per_client: RateLimit | None = None  # each client identity
    client_header: Annotated[StrictStr, Field(max_length=63, pattern=r"^[A-Za-z0-9-]+$")] | None = None
    max_request_bytes: Annotated[int, Strict(), Field(ge=1, le=64 * 1024 * 1024), Integral] | None = None
    protocol: Literal["v2", "openai"] | None = None  # the request schema enforced
    input: TextChecks | None = None
    output: TextChecks | None = None
    action: Literal["block", "log"] = "block"
    audit_content: StrictBool = False  # write request and response bodies into the audit line
    drift: Drift | None = None


class ModelDeploymentSpec(_Spec):
    model: ModelRef
    runtime: Runtime
    signature: Source | None = None
    additional_signatures: Annotated[list[Source], Field(max_length=16)] | None = None
    sbom: Sbom | None = None
    attestations: Annotated[list[Source], Field(max_length=32)] | None = None
    rollout: Rollout | None = None
    guard: Guard | None = None

    @model_validator(mode="after")
    def _split_by_guard(self) -> ModelDeploymentSpec:
        if self.guard is None and self.gated_rollout is not None:
            raise ValueError("rollout.strategy canary needs spec.guard for runtime triton: the guard splits traffic")
        return self

    @property
    def gated_rollout(self) -> Canary | None:
        """The canary settings when a new digest rolls out step by step behind the guard (runtime triton)."""
        rollout = self.rollout
        if rollout is None or rollout.strategy != "canary" or self.runtime.kind != "triton":
            return None
        return rollout.canary


class ModelDeployment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    metadata: Metadata = Field(default_factory=Metadata)
    spec: ModelDeploymentSpec

    @property
    def where(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}" if self.metadata.namespace else self.metadata.name


# -- ModelApproval --------------------------------------------------------------------------------------------------


class ModelApprovalSpec(_Spec):
    model_deployment: Annotated[StrictStr, Field(min_length=1, max_length=253)]
    digest: Annotated[StrictStr, Field(pattern=DIGEST_PATTERN)]
    generation: Annotated[int, Strict(), Field(ge=1), Integral] | None = None  # as the approver read it
    expires: StrictStr | None = Field(default=None, json_schema_extra={"format": "date-time"})
    comment: Annotated[StrictStr, Field(max_length=2048)] | None = None


class ModelApproval(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    metadata: Metadata = Field(default_factory=Metadata)
    spec: ModelApprovalSpec


# -- ClusterModelPolicy and ModelPolicy -----------------------------------------------------------------------------


class Expression(_Spec):
    key: StrictStr
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[StrictStr] | None = None


class NamespaceSelector(_Spec):
    match_labels: dict[str, StrictStr] | None = None
    match_expressions: list[Expression] | None = None


class Selector(_Spec):
    namespace_selector: NamespaceSelector | None = None
    models: list[Annotated[StrictStr, Field(min_length=1)]] | None = None


class TeamSelector(_Spec):
    models: list[StrictStr] | None = None


class Key(_Spec):
    public_key: Annotated[StrictStr, Field(max_length=16384)]


class CertificateChain(_Spec):
    certificates: Annotated[StrictStr, Field(max_length=65536)]


class Keyless(_Spec):
    identity: Annotated[StrictStr, Field(max_length=1024)] | None = None
    identity_reg_exp: Annotated[StrictStr, Field(max_length=1024)] | None = None
    issuer: Annotated[StrictStr, Field(max_length=1024)]
    trust_config: Annotated[StrictStr, Field(max_length=262144)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Keyless:
        _exactly_one(self, ("identity", "identity_reg_exp"), "identity or identityRegExp")
        return self


class AuthoritySpec(_Spec):
    name: Annotated[StrictStr, Field(min_length=1, max_length=63)]
    key: Key | None = None
    certificate_chain: CertificateChain | None = None
    keyless: Keyless | None = None

    @model_validator(mode="after")
    def _one(self) -> AuthoritySpec:
        _exactly_one(self, ("key", "certificate_chain", "keyless"), "key, certificateChain or keyless")
        return self


class SbomPolicySpec(_Spec):
    required: StrictBool = True
    formats: list[Literal["cyclonedx", "spdx"]] | None = None
    bind_to_digest: StrictBool = True
    allow_name_binding: StrictBool = False
    denied_licenses: list[StrictStr] | None = None
    required_model_card_fields: list[StrictStr] | None = None
    require_signature: StrictBool = False


class AllowSpec(_Spec):
    storage_uris: list[StrictStr] | None = None
    runtimes: list[Literal["kserve", "triton"]] | None = None
    images: list[StrictStr] | None = None
    formats: list[StrictStr] | None = None
    s3_endpoints: list[StrictStr] | None = None


class Approvers(_Spec):
    users: list[StrictStr] | None = None
    groups: list[StrictStr] | None = None


class TierSpec(_Spec):
    deny: StrictBool = False
    require_approval: StrictBool = False
    required_annotations: list[StrictStr] | None = None
    required_evidence: (
        Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=512)]], Field(max_length=16)] | None
    ) = None


class ComplianceSpec(_Spec):
    require_risk_label: StrictBool = True
    minimum_tier: RiskTier | None = None
    approvers: Approvers | None = None
    tiers: dict[RiskTier, TierSpec] | None = None


class RegoSpec(_Spec):
    packages: list[Annotated[StrictStr, Field(pattern=REGO_PACKAGE_PATTERN)]] | None = None
    parameters: dict[str, Any] | None = None


class RegistryPolicy(_Spec):
    """What a policy demands of registered models: ``required`` (the model must name a registry entry),
    ``requiredAliases`` (it must name one of these aliases, never a bare version number) and ``forbiddenTags``
    (a version carrying one of these tags, ``key`` or ``key=value``, is refused)."""

    required: StrictBool = False
    required_aliases: (
        Annotated[
            list[Annotated[StrictStr, Field(min_length=1, max_length=255, pattern=MLFLOW_ALIAS_PATTERN)]],
            Field(max_length=32),
        ]
        | None
    ) = None
    forbidden_tags: (
        Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=512)]], Field(max_length=64)] | None
    ) = None


class ImageSignaturePolicy(_Spec):
    """The model server's image (``spec.runtime.image``) must carry a valid signature by one of ``authorities``
    (cosign's Sigstore bundle attached as an OCI referrer: by a key, a certificate chain or a keyless identity);
    with ``devmlopsImage``, so must devmlops's own image as the cluster installs it (the guard and the storage
    initializer in every model server's Pod)."""

    authorities: Annotated[list[AuthoritySpec], Field(min_length=1, max_length=32)]
    devmlops_image: StrictBool = False


class DriftPolicy(_Spec):
    """A ClusterModelPolicy's demand on drift monitoring: declared (``spec.guard.drift``) with a signed baseline,
    and a threshold no looser than ``maxThreshold``."""

    required: StrictBool = False
    max_threshold: PsiThreshold | None = None


class GuardPolicy(_Spec):
    """A ClusterModelPolicy's demand on the guard: present, and at least as strict as ``limits``; and the cluster
    admin's word on which ClusterServingRuntimes run MLServer (``mlserverRuntimes``), the KServe runtimes a guard can
    be put in front of (docs/guard.md)."""

    required: StrictBool = False
    limits: Guard | None = None
    drift: DriftPolicy | None = None
    mlserver_runtimes: (
        Annotated[
            list[Annotated[StrictStr, Field(min_length=1, max_length=253, pattern=RUNTIME_NAME_PATTERN)]],
            Field(min_length=1, max_length=64),
        ]
        | None
    ) = None


class EvidenceConditions(_Spec):
    package: Annotated[StrictStr, Field(pattern=REGO_PACKAGE_PATTERN)]
    parameters: dict[str, Any] | None = None


class EvidenceRequirementSpec(_Spec):
    name: Annotated[StrictStr, Field(min_length=1, max_length=63, pattern=REQUIREMENT_NAME_PATTERN)]
    predicate_type: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    authorities: Annotated[list[AuthoritySpec], Field(max_length=32)] | None = None
    max_age: Annotated[StrictStr, Field(max_length=32, pattern=DURATION_PATTERN)] | None = None
    tiers: Annotated[list[RiskTier], Field(max_length=4)] | None = None
    conditions: EvidenceConditions | None = None


Evidence = Annotated[list[EvidenceRequirementSpec], Field(max_length=16)]


class ClusterModelPolicySpec(_Spec):
    mode: Literal["enforce", "warn"] = "enforce"
    on_violation: Literal["degrade", "scaleToZero"] = "degrade"
    selector: Selector | None = None
    authorities: Annotated[list[AuthoritySpec], Field(min_length=1, max_length=32)]
    threshold: Annotated[int, Strict(), Field(ge=1), Integral] = 1
    sbom: SbomPolicySpec | None = None
    allow: AllowSpec | None = None
    compliance: ComplianceSpec | None = None
    evidence: Evidence | None = None
    rego: RegoSpec | None = None
    guard: GuardPolicy | None = None
    registry: RegistryPolicy | None = None
    image_signatures: ImageSignaturePolicy | None = None


class ModelPolicySpec(_Spec):
    """A team's policy: the same rules, signers optional, no namespace selector (it is bound to its namespace)."""

    mode: Literal["enforce", "warn"] = "enforce"
    selector: TeamSelector | None = None
    authorities: list[AuthoritySpec] | None = None
    threshold: Annotated[int, Strict(), Field(ge=1), Integral] | None = None
    sbom: SbomPolicySpec | None = None
    allow: AllowSpec | None = None
    compliance: ComplianceSpec | None = None
    evidence: Evidence | None = None
    rego: RegoSpec | None = None
    registry: RegistryPolicy | None = None


# -- parsing --------------------------------------------------------------------------------------------------------

_EXPECTED = {
    "model_type": "an object",
    "dict_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "a list",
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "an integer",
    "missing": "a value (this field is required)",
}


def _path(loc: tuple[int | str, ...], root: str) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("function-after",) and not str(part).startswith("function-"):
            path += f".{part}" if path else str(part)
    return path


def _found(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)" if value else "an empty list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(error: Any, root: str) -> str:
    kind, message = str(error["type"]), str(error["msg"])
    path = _path(tuple(error["loc"]), root)
    if kind == "missing":
        return f"{path}: missing, expected a value (this field is required)"
    if kind == "extra_forbidden":
        return f"{path}: unknown field (check its spelling)"
    if kind == "value_error":  # a rule over several fields (exactly one of ...): the object is what is wrong
        return f"{path}: {message.removeprefix('Value error, ')}"
    expected = _EXPECTED.get(kind) or message.removeprefix("Input should be ").removeprefix("input should be ")
    context = error.get("ctx") or {}
    bounds = {
        "string_pattern_mismatch": f"a string matching {context.get('pattern')}",
        "too_short": f"at least {context.get('min_length')} item(s)",
        "too_long": f"at most {context.get('max_length')} item(s)",
        "string_too_short": f"at least {context.get('min_length')} character(s)",
        "string_too_long": f"at most {context.get('max_length')} characters",
        "greater_than_equal": f"a number of at least {context.get('ge')}",
        "less_than_equal": f"a number of at most {context.get('le')}",
    }
    expected = bounds.get(kind, expected)
    return f"{path}: found {_found(error.get('input'))}, expected {expected}"


def _validate(model: type[_Model], obj: Any, kind: str, root: str) -> _Model:
    """``kind`` names the object in errors: with ``root`` '' (a whole object) its namespace/name are added, worked
    out only when there is an error to report."""
    if not isinstance(obj, Mapping):
        where = kind if root else _named(kind, obj)
        raise InvalidInputError(f"{where}: {root or 'the object'}: found {_found(obj)}, expected an object")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        where = kind if root else _named(kind, obj)
        problems = [_problem(error, root) for error in exc.errors(include_url=False)]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InvalidInputError(f"{where}: " + "; ".join(problems[:3]) + more, context={"problems": problems}) from None


def _named(kind: str, obj: Any) -> str:
    """``Kind namespace/name`` as far as the object says, for the first words of an error."""
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    parts = [metadata.get(k) for k in ("namespace", "name")] if isinstance(metadata, Mapping) else []
    return f"{kind} {'/'.join(p for p in parts if isinstance(p, str) and p) or '?'}"


def parse_model_deployment(obj: Any) -> ModelDeployment:
    """A typed ModelDeployment, or ``InvalidInputError`` naming every wrong field (found, expected)."""
    return _validate(ModelDeployment, obj, "ModelDeployment", "")


def parse_model_approval(obj: Any) -> ModelApproval:
    return _validate(ModelApproval, obj, "ModelApproval", "")


def parse_cluster_model_policy(spec: Any, name: str) -> ClusterModelPolicySpec:
    """The spec of ClusterModelPolicy ``name``; paths in errors start at ``spec``."""
    return _validate(ClusterModelPolicySpec, spec, f"ClusterModelPolicy {name}", "spec")


def parse_model_policy(spec: Any, name: str) -> ModelPolicySpec:
    return _validate(ModelPolicySpec, spec, f"ModelPolicy {name}", "spec")
