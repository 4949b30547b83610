"""``decide()``: the one decision function that the webhook, the operator and the CLI share.

Gates run in order per matching policy: signature, sbom, allow-list, compliance, evidence, approval (serving
stage), Rego.
Every policy that selects a ModelDeployment must pass; a team's ModelPolicy joins only where a ClusterModelPolicy
selects, and a ModelDeployment no ClusterModelPolicy selects gets the configured no-match action (deny by default).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from devmlops.core.addresses import (
    ENDPOINT_SLICES,
    review_endpoint_slice,
    review_service_deletion,
    waiting_slice_result,
)
from devmlops.core.approvalreview import review_approval
from devmlops.core.evidence import Evidence
from devmlops.core.exemptions import BreakGlass, compile_break_glass, compile_exemption
from devmlops.core.gates.allowlist import check_allowlist
from devmlops.core.gates.approval import check_approval
from devmlops.core.gates.compliance import RISK_LABEL, check_compliance, effective_tier, risk_tier
from devmlops.core.gates.evidence import check_evidence
from devmlops.core.gates.guard import check_guard
from devmlops.core.gates.imagesig import check_image_signature
from devmlops.core.gates.modelformat import check_model_format
from devmlops.core.gates.registry import check_oci_source, check_registry
from devmlops.core.gates.rego import Stage, check_rego, rego_input
from devmlops.core.gates.requester import check_requester
from devmlops.core.gates.sbom import check_sbom
from devmlops.core.gates.signature import check_signature
from devmlops.core.globs import matching_glob
from devmlops.core.manifests import ModelDeployment, parse_model_deployment
from devmlops.core.model import Decision, GateResult, Outcome
from devmlops.core.narrowing import widenings
from devmlops.core.policy import Policy, PolicySet, compile_model_policy, compile_policy, tier_rank
from devmlops.core.ports import PolicyEngine, SignatureVerifier, SignedModel
from devmlops.core.render import CANARY_SUFFIX
from devmlops.core.review import AdmissionRequest
from devmlops.core.workloads import (
    MAX_SERVICE_NAME,
    SERVICE_SUFFIXES,
    SERVING_RESOURCES,
    added_finalizers,
    review_serving,
    serves_models,
)
from devmlops.errors import InvalidInputError

__all__ = [
    "CLUSTER_MODEL_POLICY",
    "MODEL_APPROVAL",
    "MODEL_DEPLOYMENT",
    "MODEL_POLICY",
    "OPERATOR_FINALIZER",
    "decide",
    "resource_of",
    "select_policies",
]

MODEL_DEPLOYMENT = ("devmlops.io", "ModelDeployment")
CLUSTER_MODEL_POLICY = ("devmlops.io", "ClusterModelPolicy")
MODEL_POLICY = ("devmlops.io", "ModelPolicy")
MODEL_APPROVAL = ("devmlops.io", "ModelApproval")
# The operator's (kopf's) finalizer on a ModelDeployment: the one finalizer it may carry; the operator removes it.
OPERATOR_FINALIZER = "devmlops.io/operator"
# The plural resource of a kind, for requests built inside devmlops (the API server's carry request.resource).
_RESOURCES = {
    "Pod": "pods",
    "Service": "services",
    "EndpointSlice": ENDPOINT_SLICES,
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "InferenceService": "inferenceservices",
    "ServingRuntime": "servingruntimes",
    "ClusterServingRuntime": "clusterservingruntimes",
    "TrainedModel": "trainedmodels",
    "InferenceGraph": "inferencegraphs",
    "LLMInferenceService": "llminferenceservices",
}


def resource_of(request: AdmissionRequest) -> str:
    return request.resource or _RESOURCES.get(request.kind.kind, "")


def _now(evidence: Evidence) -> dt.datetime:
    """The shell's clock; an unreadable one is the end of time, so nothing that expires still holds (fail closed)."""
    try:
        return dt.datetime.fromisoformat(evidence.now)
    except ValueError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)


def _single(gate: str, outcome: Outcome, reason: str, hint: str = "") -> Decision:
    return Decision((GateResult(gate=gate, outcome=outcome, reason=reason, hint=hint),))


def decide(
    request: AdmissionRequest,
    policies: PolicySet,
    evidence: Evidence,
    verifier: SignatureVerifier,
    engine: PolicyEngine | None = None,
    *,
    stage: Stage = "admission",
) -> Decision:
    """Run the gates that apply to the request's kind and operation."""
    decision = _decide(request, policies, evidence, verifier, engine, stage)
    return Decision(decision.results, signer=decision.signer, policy_revision=policies.revision)


def _decide(
    request: AdmissionRequest,
    policies: PolicySet,
    evidence: Evidence,
    verifier: SignatureVerifier,
    engine: PolicyEngine | None,
    stage: Stage,
) -> Decision:
    kind = (request.kind.group, request.kind.kind)
    if request.orphaning and (kind in _SERVING_OWNERS or serves_models(request.old_object or {}, evidence)):
        return _single(
            "operation",
            "fail",
            f"{request.kind.kind} {request.name}: deleting it with propagationPolicy Orphan would leave what it owns "
            "(a model server) running where revocation and scale-to-zero no longer reach it",
            "delete with the default (background) or foreground propagation",
        )
    if request.operation == "DELETE" and resource_of(request) == "services":
        deletion = review_service_deletion(request, evidence)  # a model's address: core/addresses.py
        if deletion is not None:
            return deletion
    if request.operation == "DELETE":
        return _single("operation", "pass", "deletion is always allowed")
    if _finishing_deletion(request):
        return _single(
            "operation", "pass", "finalizers removed from an object being deleted; deletion is always allowed"
        )
    if kind == CLUSTER_MODEL_POLICY:
        return _decide_policy(request)
    if kind in _GRANTS:
        return _decide_grant(request, _GRANTS[kind])
    if kind == MODEL_POLICY:
        return _decide_team_policy(request, policies, evidence)
    if resource_of(request) == ENDPOINT_SLICES:
        return review_endpoint_slice(request, evidence)
    if resource_of(request) in SERVING_RESOURCES:
        return review_serving(replace(request, resource=resource_of(request)), evidence, now=_now(evidence))
    if kind == MODEL_APPROVAL:
        target = evidence.target or {}
        model_name = str(((target.get("spec") or {}).get("model") or {}).get("name") or "")
        selecting = select_policies(
            policies, namespace=request.namespace, namespace_labels=evidence.namespace_labels, model_name=model_name
        )
        return review_approval(
            request,
            evidence.target,
            selecting,
            now=evidence.now,
            sbom=evidence.sbom_summary,
            acts_as=evidence.approver_acts_as,
            requester_acts_as=evidence.requester_acts_as,
        )
    if kind != MODEL_DEPLOYMENT:
        name = f"{request.kind.kind}.{request.kind.group or 'core'}"
        return _single(
            "kind", "error", f"devmlops has no rule for kind {name}", "remove it from the webhook configuration"
        )
    try:
        deployment = parse_model_deployment(request.object)
    except InvalidInputError as exc:
        return _single("manifest", "fail", exc.user_message, "fix the ModelDeployment field named above")
    held = _held_by_finalizer(request)
    if held is not None:
        return Decision((held,))
    spec = request.object.get("spec") if request.object is not None else None
    if isinstance(spec, Mapping) and _is_scale_down(request, spec):
        return _single("operation", "pass", "scaling down is always allowed")
    if evidence.requester_stamped:
        requester = check_requester(request)
        if requester.blocking:
            return Decision((requester,))
        lowered = _lowered_tier(request)
        if lowered:
            return Decision((lowered,))
    return _decide_model_deployment(request, deployment, policies, evidence, verifier, engine, stage)


_SERVING_OWNERS = (MODEL_DEPLOYMENT, ("serving.kserve.io", "InferenceService"))

_GRANTS = {
    ("devmlops.io", "ClusterWorkloadExemption"): compile_exemption,
    ("devmlops.io", "ClusterBreakGlass"): compile_break_glass,
}


def _decide_grant(request: AdmissionRequest, compile_: Callable[[Mapping[str, Any]], object]) -> Decision:
    """An exemption or break-glass grant must compile, or it is refused with the field that is wrong. A break-glass
    grant that names ServiceAccounts is admitted with a warning: it is every editor's of their namespaces."""
    try:
        grant = compile_(request.object or {})
    except InvalidInputError as exc:
        return _single("policy", "fail", exc.user_message, f"fix the {request.kind.kind} field named above")
    passed = GateResult(gate="policy", outcome="pass", reason=f"{request.kind.kind} {request.name} compiles")
    named = grant.account_holders() if isinstance(grant, BreakGlass) else []
    warnings = tuple(
        GateResult(
            gate="policy",
            outcome="fail",
            mode="warn",
            reason=f"spec.{holder}, and every editor of a ServiceAccount's namespace can act as it (tokens, "
            "impersonation, Pods), so this break-glass is theirs too",
            hint="name the people who may break the glass",
        )
        for holder in named
    )
    return Decision((passed, *warnings))


def _decide_policy(request: AdmissionRequest) -> Decision:
    """A ClusterModelPolicy must compile; otherwise it is refused with the field that is wrong."""
    try:
        policy = compile_policy(request.object or {})
    except InvalidInputError as exc:
        return _single("policy", "fail", exc.user_message, "fix the ClusterModelPolicy field named above")
    return _single(
        "policy", "pass", f"ClusterModelPolicy {policy.name} compiles ({len(policy.authorities)} authorities)"
    )


def _decide_team_policy(request: AdmissionRequest, policies: PolicySet, evidence: Evidence) -> Decision:
    """A ModelPolicy must compile and may only add requirements to the cluster policies of its namespace."""
    try:
        team = compile_model_policy(
            {
                **(request.object or {}),
                "metadata": {**((request.object or {}).get("metadata") or {}), "namespace": request.namespace},
            }
        )
    except InvalidInputError as exc:
        return _single("policy", "fail", exc.user_message, "fix the ModelPolicy field named above")
    cluster = [
        p
        for p in policies.policies
        if not p.namespace and (p.namespace_selector is None or p.namespace_selector.matches(evidence.namespace_labels))
    ]
    problems = widenings((request.object or {}).get("spec") or {}, cluster)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return _single(
            "policy",
            "fail",
            f"a ModelPolicy can only add requirements: {problems[0]}{more}",
            "narrow the ModelPolicy to what the cluster policies allow",
        )
    if not cluster:
        return _single(
            "policy",
            "pass",
            f"ModelPolicy {team.name} compiles, but no ClusterModelPolicy selects namespace '{request.namespace}': "
            "it applies to nothing until one does (a team policy only adds to a ClusterModelPolicy)",
        )
    return _single("policy", "pass", f"ModelPolicy {team.name} only adds requirements")


_UNCOMPARED_METADATA = ("finalizers", "resourceVersion", "managedFields", "generation")


def _finishing_deletion(request: AdmissionRequest) -> bool:
    """An UPDATE of an object the API server is already deleting that only removes finalizers: a controller letting
    go of it (KServe, say, of an InferenceService). Refusing it would leave the object, and whatever it owns, stuck
    for ever once its policy no longer admits it. Anything else about a deleting object is decided in full, and so
    is a re-decision of a stored object (old and new the same: no finalizer removed)."""
    old, new = request.old_object, request.object
    if request.operation != "UPDATE" or old is None or new is None:
        return False
    old_metadata, new_metadata = old.get("metadata"), new.get("metadata")
    if not isinstance(old_metadata, Mapping) or not isinstance(new_metadata, Mapping):
        return False
    if not (old_metadata.get("deletionTimestamp") and new_metadata.get("deletionTimestamp")):
        return False
    old_finalizers, new_finalizers = old_metadata.get("finalizers") or [], new_metadata.get("finalizers") or []
    if not all(isinstance(f, list) and all(isinstance(x, str) for x in f) for f in (old_finalizers, new_finalizers)):
        return False
    if not (set(new_finalizers) < set(old_finalizers) and len(new_finalizers) < len(old_finalizers)):
        return False

    def rest(obj: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
        kept = {key: value for key, value in metadata.items() if key not in _UNCOMPARED_METADATA}
        return {**obj, "metadata": kept}

    return rest(old, old_metadata) == rest(new, new_metadata)


def _held_by_finalizer(request: AdmissionRequest) -> GateResult | None:
    """A ModelDeployment that is being deleted is never re-checked by the operator (its children go with it): a
    finalizer nobody removes would keep it terminating, and its model server running at full strength, where
    revocation no longer reaches. Only the operator's own finalizer, which the operator removes, may be added."""
    added = [f for f in added_finalizers(request) if f != OPERATOR_FINALIZER]
    if not added:
        return None
    return GateResult(
        gate="operation",
        outcome="fail",
        reason=f"metadata.finalizers: {request.username} adds {added}, expected none but {OPERATOR_FINALIZER!r}: a "
        "ModelDeployment held in deletion by a finalizer keeps its model server running, and the operator no longer "
        "re-checks it (a revoked key would not stop it)",
        hint="do not add finalizers to a ModelDeployment; the operator keeps its own",
    )


def _lowered_tier(request: AdmissionRequest) -> GateResult | None:
    """A label can raise a ModelDeployment's risk tier, never lower it: an edit that lowers (or removes) the label
    would otherwise take away the approval its requester's model waits for, without anyone approving."""
    if request.operation != "UPDATE" or request.old_object is None or request.object is None:
        return None
    old, new = risk_tier(request.old_object), risk_tier(request.object)
    if tier_rank(new) >= tier_rank(old) or tier_rank(old) < 0:
        return None
    return GateResult(
        gate="compliance",
        outcome="fail",
        reason=f"label {RISK_LABEL}: got {new or 'nothing'!r}, was {old!r}; a label can raise a tier, never lower it",
        hint="create a new ModelDeployment with the lower tier (it needs the approvals that tier demands)",
    )


def _decided_metadata(obj: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """Labels and annotations, but kubectl's copy of the last applied manifest (which no decision reads)."""
    metadata = (obj or {}).get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if isinstance(annotations, Mapping):
        annotations = {k: v for k, v in annotations.items() if not str(k).startswith("kubectl.kubernetes.io/")}
    return metadata.get("labels"), annotations


def _is_scale_down(request: AdmissionRequest, spec: Mapping[str, Any]) -> bool:
    old = request.old_object.get("spec") if request.operation == "UPDATE" and request.old_object else None
    if not isinstance(old, Mapping):
        return False
    if _decided_metadata(request.old_object) != _decided_metadata(request.object):
        return False  # the fast path is for the replica count alone, metadata included
    old_runtime, new_runtime = dict(old.get("runtime") or {}), dict(spec.get("runtime") or {})
    old_replicas, new_replicas = old_runtime.pop("replicas", 1), new_runtime.pop("replicas", 1)
    same_otherwise = {**old, "runtime": old_runtime} == {**spec, "runtime": new_runtime}
    return (
        same_otherwise
        and isinstance(new_replicas, int)
        and isinstance(old_replicas, int)
        and new_replicas < old_replicas
    )


def select_policies(
    policies: PolicySet, *, namespace: str, namespace_labels: Mapping[str, str], model_name: str
) -> list[Policy]:
    """The ClusterModelPolicies that select the model (namespace selector and model globs), then, only when at least
    one does, the team ModelPolicies of its namespace that select it. A team policy narrows what a cluster policy
    governs; it never stands alone, so a model no ClusterModelPolicy selects gets the no-match action."""

    def selects(policy: Policy) -> bool:
        return (policy.namespace_selector is None or policy.namespace_selector.matches(namespace_labels)) and (
            not policy.model_globs or matching_glob(policy.model_globs, model_name) is not None
        )

    cluster = [policy for policy in policies.policies if not policy.namespace and selects(policy)]
    if not cluster:
        return []
    return cluster + [policy for policy in policies.policies if policy.namespace == namespace and selects(policy)]


def _decide_model_deployment(
    request: AdmissionRequest,
    deployment: ModelDeployment,
    policies: PolicySet,
    evidence: Evidence,
    verifier: SignatureVerifier,
    engine: PolicyEngine | None,
    stage: Stage,
) -> Decision:
    obj = request.object or {}
    results: list[GateResult] = [
        GateResult(
            gate="policy",
            policy=name,
            outcome="error",
            reason=f"policy cannot be compiled: {reason}",
            hint="fix the ClusterModelPolicy; until then devmlops fails closed",
        )
        for name, reason in sorted(policies.broken.items())
        # A broken ClusterModelPolicy may have selected anything; a team's ModelPolicy ("namespace/name") only
        # ever narrows its own namespace, so it fails closed there and nowhere else.
        if "/" not in name or name.split("/", 1)[0] == request.namespace
    ]
    model_name = deployment.spec.model.name
    matched = select_policies(
        policies, namespace=request.namespace, namespace_labels=evidence.namespace_labels, model_name=model_name
    )
    if not matched:
        outcome: Outcome = "pass" if policies.no_match == "allow" else "fail"
        reason = f"no ClusterModelPolicy selects model '{model_name}' in namespace '{request.namespace}'"
        teams = sorted(p.name for p in policies.policies if p.namespace == request.namespace)
        if teams:
            reason += f" (ModelPolicy {', '.join(teams)} only adds to a ClusterModelPolicy, never applies alone)"
        results.append(
            GateResult(
                gate="policy",
                outcome=outcome,
                mode="warn" if policies.no_match == "warn" else "enforce",
                reason=reason + ("" if policies.no_match == "allow" else "; nothing matched means deny"),
                hint="ask the platform team for a ClusterModelPolicy that selects this namespace and model",
            )
        )
        return Decision(tuple(results))
    tier = effective_tier(obj, matched, evidence.sbom_summary)  # one tier, judged by every selecting policy
    verified: SignedModel | None = None  # what a ClusterModelPolicy's authorities verified: the signer of record
    cluster = [policy for policy in matched if not policy.namespace]
    # KServe runtimes declared to run MLServer, by any ClusterModelPolicy selecting the model (gates/guard.py).
    mlserver_runtimes = frozenset(name for p in cluster for name in p.mlserver_runtimes)
    for policy in sorted(matched, key=lambda p: bool(p.namespace)):  # cluster policies first
        for registry in (check_registry(deployment, policy, evidence), check_oci_source(deployment, policy)):
            if registry is not None:
                results.append(registry)
        image = check_image_signature(deployment, policy, evidence)
        if image is not None:
            results.append(image)
        signature, signed = check_signature(deployment, policy, evidence, verifier)
        results.append(signature)
        if not policy.namespace:
            verified = verified or signed
        # A team policy's own signers add a requirement; they never replace the cluster-verified signature, which its
        # SBOM binds to when it names no signers.
        bound = signed or verified
        results.append(check_sbom(policy, evidence, bound, verifier))
        results.append(check_allowlist(deployment, policy))
        formats = check_model_format(deployment, policy, bound)
        if formats is not None:
            results.append(formats)
        results.append(check_compliance(deployment, policy, tier))
        results.append(
            check_guard(deployment, policy, evidence, verifier, mlserver_runtimes=mlserver_runtimes, cluster=cluster)
        )
        results.extend(check_evidence(deployment, policy, evidence, verifier, engine, tier))
        if stage == "serving":
            results.append(check_approval(deployment, policy, evidence, tier))
        if policy.rego_packages:  # the input document is the largest thing a decision builds: only when asked
            document = rego_input(request, obj, policy, evidence, bound, stage=stage, tier=tier)
            results.extend(check_rego(policy, document, engine))
    for taken in evidence.squatted_services:
        results.append(
            GateResult(
                gate="address",
                outcome="fail",
                reason=f"Service {taken} already exists and no model owns it: it carries the name of this model's "
                "Service, and KServe keeps a Service it finds under that name (its clients would reach that Service)",
                hint=f"delete or rename Service {taken} first",
            )
        )
    results.extend(waiting_slice_result(request.namespace, name, service) for name, service in evidence.squatted_slices)
    if evidence.reserved_suffix:
        results.append(_reserved_name(deployment.metadata.name, evidence.reserved_suffix))
    unrenderable = _unrenderable_name(deployment.metadata.name)
    if unrenderable is not None:
        results.append(unrenderable)
    unbound = _unsigned_name(deployment, verified, policies, request.namespace, evidence.namespace_labels)
    if unbound is not None:
        results.append(unbound)
    return Decision(tuple(results), signer=verified.signer if verified else "")


def _reserved_name(name: str, suffix: str) -> GateResult:
    """A new ModelDeployment named as another one's children: its own Deployment and Service would take theirs (the
    operator replaces what it finds under a child's name, the webhook admits the operator's rendering)."""
    base = name.removesuffix(suffix)
    what = (
        f"ModelDeployment {base}'s new version during a gated rollout (its Deployment and Service; {base}'s stable "
        "guard forwards a share of its traffic there)"
        if suffix == CANARY_SUFFIX
        else f"KServe's {suffix.lstrip('-')} of ModelDeployment {base} (its Deployment and Service)"
    )
    return GateResult(
        gate="address",
        outcome="fail",
        reason=f"the name {name} is where {what} runs: a ModelDeployment under it would take those objects and the "
        "traffic to them, or lose its own",
        hint=f"choose a name that ends with none of {', '.join(s for s in SERVICE_SUFFIXES if s)}",
    )


_LABEL_HEAD = frozenset("abcdefghijklmnopqrstuvwxyz")
_LABEL_BODY = _LABEL_HEAD | frozenset("0123456789-")


def _unrenderable_name(name: str) -> GateResult | None:
    """A ModelDeployment's name is any DNS subdomain (the CRD does not narrow it), but the children take it: a Service
    (Triton's, KServe's predictor) and an InferenceService need a DNS label (RFC 1035: at most 63 lowercase letters,
    digits and '-', a letter first, no '-' last). Under another name the operator could write the Deployment and
    never its Service, so no reconcile got as far as the status (operator deputy review: mallory's "fraud.v2")."""
    if not name:  # no name to judge (a mutating review of a generateName create; the validating one sees it)
        return None
    if (
        len(name) <= MAX_SERVICE_NAME
        and name[0] in _LABEL_HEAD
        and name[-1] != "-"
        and all(c in _LABEL_BODY for c in name)
    ):
        return None
    return GateResult(
        gate="address",
        outcome="fail",
        reason=f"metadata.name: {name!r} is no DNS label (at most {MAX_SERVICE_NAME} lowercase letters, digits and "
        "'-', starting with a letter and not ending with '-'): the Service and the InferenceService devmlops renders "
        "under the ModelDeployment's name could never be written",
        hint="name the ModelDeployment as a Service may be named (fraud-v2 rather than fraud.v2)",
    )


def _unsigned_name(
    deployment: ModelDeployment,
    verified: SignedModel | None,
    policies: PolicySet,
    namespace: str,
    namespace_labels: Mapping[str, str],
) -> GateResult | None:
    """Where a policy selects models by name, the name must be the one the signature covers: spec.model.name is the
    requester's word, and another name would take the model out of the policy that selects it (under a broader
    one). Where no policy selects by name, the name decides nothing and is not checked."""
    by_name = sorted(
        p.name
        for p in policies.policies
        if p.model_globs
        and (p.namespace == namespace if p.namespace else True)
        and (p.namespace_selector is None or p.namespace_selector.matches(namespace_labels))
    )
    name = deployment.spec.model.name
    if not by_name or verified is None or verified.model_name == name:
        return None
    return GateResult(
        gate="signature",
        outcome="fail",
        reason=f"spec.model.name: got '{name}', expected '{verified.model_name}', the name the signature covers: "
        f"{', '.join(by_name)} select(s) models by name here, so a model goes by its signed name",
        hint="set spec.model.name to the name the model was signed under",
    )
