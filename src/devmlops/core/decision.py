"""``decide()``: the one decision function that the webhook, the operator and the CLI share.

Gates run in order per matching policy: signature, sbom, allow-list. Every policy that selects a ModelDeployment
must pass; a ModelDeployment no policy selects gets the configured no-match action (deny by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from devmlops.core.approvalreview import review_approval
from devmlops.core.childreview import review_child
from devmlops.core.evidence import Evidence
from devmlops.core.gates.allowlist import check_allowlist
from devmlops.core.gates.approval import check_approval
from devmlops.core.gates.compliance import check_compliance
from devmlops.core.gates.rego import Stage, check_rego, rego_input
from devmlops.core.gates.requester import check_requester
from devmlops.core.gates.sbom import check_sbom
from devmlops.core.gates.signature import check_signature
from devmlops.core.globs import matching_glob
from devmlops.core.model import Decision, GateResult, Outcome
from devmlops.core.narrowing import widenings
from devmlops.core.policy import Policy, PolicySet, compile_model_policy, compile_policy
from devmlops.core.ports import PolicyEngine, SignatureVerifier, SignedModel
from devmlops.core.review import AdmissionRequest
from devmlops.errors import InvalidInputError

__all__ = ["CLUSTER_MODEL_POLICY", "MODEL_APPROVAL", "MODEL_DEPLOYMENT", "MODEL_POLICY", "decide", "select_policies"]

MODEL_DEPLOYMENT = ("devmlops.io", "ModelDeployment")
CLUSTER_MODEL_POLICY = ("devmlops.io", "ClusterModelPolicy")
MODEL_POLICY = ("devmlops.io", "ModelPolicy")
MODEL_APPROVAL = ("devmlops.io", "ModelApproval")
MODEL_SERVER_KINDS = frozenset(
    {
        ("serving.kserve.io", "InferenceService"),
        ("serving.kserve.io", "ServingRuntime"),
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
    }
)


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
    return replace(decision, policy_revision=policies.revision)


def _decide(
    request: AdmissionRequest,
    policies: PolicySet,
    evidence: Evidence,
    verifier: SignatureVerifier,
    engine: PolicyEngine | None,
    stage: Stage,
) -> Decision:
    kind = (request.kind.group, request.kind.kind)
    if request.operation == "DELETE":
        return _single("operation", "pass", "deletion is always allowed")
    if _finishing_deletion(request):
        return _single(
            "operation", "pass", "finalizers removed from an object being deleted; deletion is always allowed"
        )
    if kind == CLUSTER_MODEL_POLICY:
        return _decide_policy(request)
    if kind == MODEL_POLICY:
        return _decide_team_policy(request, policies, evidence)
    if kind in MODEL_SERVER_KINDS:
        return review_child(
            request, evidence.owner, evidence.owner_decision, image_patterns=evidence.model_server_images
        )
    if kind == MODEL_APPROVAL:
        target = evidence.target or {}
        model_name = str(((target.get("spec") or {}).get("model") or {}).get("name") or "")
        selecting = select_policies(
            policies, namespace=request.namespace, namespace_labels=evidence.namespace_labels, model_name=model_name
        )
        return review_approval(request, evidence.target, selecting, now=evidence.now)
    if kind != MODEL_DEPLOYMENT:
        name = f"{request.kind.kind}.{request.kind.group or 'core'}"
        return _single(
            "kind", "error", f"devmlops has no rule for kind {name}", "remove it from the webhook configuration"
        )
    spec = request.object.get("spec") if request.object is not None else None
    if not isinstance(spec, Mapping):
        return _single("manifest", "error", "the ModelDeployment has no spec object: expected spec.model, spec.runtime")
    if _is_scale_down(request, spec):
        return _single("operation", "pass", "scaling down is always allowed")
    if evidence.requester_stamped:
        requester = check_requester(request)
        if requester.blocking:
            return Decision((requester,))
    return _decide_model_deployment(request, spec, policies, evidence, verifier, engine, stage)


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


def _is_scale_down(request: AdmissionRequest, spec: Mapping[str, Any]) -> bool:
    old = request.old_object.get("spec") if request.operation == "UPDATE" and request.old_object else None
    if not isinstance(old, Mapping):
        return False
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
    """Cluster policies by namespace selector and model globs; a team's ModelPolicy only in its own namespace."""
    return [
        policy
        for policy in policies.policies
        if (not policy.namespace or policy.namespace == namespace)
        and (policy.namespace_selector is None or policy.namespace_selector.matches(namespace_labels))
        and (not policy.model_globs or matching_glob(policy.model_globs, model_name) is not None)
    ]


def _decide_model_deployment(
    request: AdmissionRequest,
    spec: Mapping[str, Any],
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
    model_name = str((spec.get("model") or {}).get("name") or "")
    matched = select_policies(
        policies, namespace=request.namespace, namespace_labels=evidence.namespace_labels, model_name=model_name
    )
    if not matched:
        outcome: Outcome = "pass" if policies.no_match == "allow" else "fail"
        reason = f"no ClusterModelPolicy selects model '{model_name}' in namespace '{request.namespace}'"
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
    verified: SignedModel | None = None
    for policy in sorted(matched, key=lambda p: bool(p.namespace)):  # cluster policies first
        signature, signed = check_signature(spec, policy, evidence, verifier)
        results.append(signature)
        verified = signed or verified  # a team policy without signers binds to the cluster-verified signature
        results.append(check_sbom(spec, policy, evidence, signed or verified, verifier))
        results.append(check_allowlist(spec, policy))
        results.append(check_compliance(obj, policy, evidence))
        if stage == "serving":
            results.append(check_approval(obj, policy, evidence))
        document = rego_input(request, obj, policy, evidence, signed or verified, stage=stage)
        results.extend(check_rego(policy, document, engine))
    return Decision(tuple(results), signer=verified.signer if verified else "")
