"""The guard gate: where a ClusterModelPolicy demands a serving guard, the ModelDeployment declares one at least as
strict (``spec.guard``, drift monitoring included), and its runtime is one devmlops can put the guard in front of:
Triton, or KServe on a ClusterServingRuntime that a selecting ClusterModelPolicy declares to run MLServer."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from devmlops.core.baseline import evaluation_authorities, signed_baseline
from devmlops.core.evidence import Evidence
from devmlops.core.gates import policy_result
from devmlops.core.guard import drift_required, guard_problems
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import Policy
from devmlops.core.ports import SignatureVerifier, VerificationUnavailable

__all__ = ["GATE", "GUARDED_RUNTIMES", "check_guard"]

GATE = "guard"
# Runtimes whose rendering always puts the guard in front of the model server (core/render.py). KServe points its
# predictor Service at a sidecar named transformer-container, but its own model servers listen on every interface of
# the Pod, reachable around the guard at the Pod's IP; MLServer listens where MLSERVER_HOST says. devmlops cannot tell
# from a ClusterServingRuntime which server its image runs, so a cluster admin declares it (a ClusterModelPolicy's
# spec.guard.mlserverRuntimes), and a KServe model is guarded only on a runtime so declared (docs/guard.md).
GUARDED_RUNTIMES = ("triton",)
_DECLARED = "spec.guard.mlserverRuntimes"


def _unguardable(deployment: ModelDeployment, mlserver_runtimes: Collection[str]) -> str:
    """Why devmlops cannot put the guard in front of this model's server ('' when it can)."""
    runtime = deployment.spec.runtime
    if runtime.kind in GUARDED_RUNTIMES:
        return ""
    named = runtime.serving_runtime
    if runtime.kind == "kserve" and named and named in mlserver_runtimes:
        return ""
    declared = sorted(mlserver_runtimes)
    which = f"with spec.runtime.servingRuntime '{named}'" if named else "without spec.runtime.servingRuntime"
    return (
        f"spec.runtime.kind: found '{runtime.kind}' {which}, expected one of {list(GUARDED_RUNTIMES)}, or kserve on "
        f"a ClusterServingRuntime that a ClusterModelPolicy selecting the model declares in {_DECLARED} "
        f"(declared: {declared}): devmlops renders the guard for those runtimes only"
    )


def check_guard(
    deployment: ModelDeployment,
    policy: Policy,
    evidence: Evidence,
    verifier: SignatureVerifier,
    *,
    mlserver_runtimes: Collection[str] = (),
    cluster: Sequence[Policy] = (),
) -> GateResult:
    """Where the policy requires drift monitoring, the model's evaluation evidence (``spec.attestations``) must carry
    a baseline signed by one of the policy's authorities (``core/baseline.py``, as rendering picks it); for a team's
    ModelPolicy, by one of the selecting ClusterModelPolicies' (``cluster``), the only ones rendering takes it from.

    ``mlserver_runtimes``: the ClusterServingRuntimes that the ClusterModelPolicies selecting the model declare to run
    MLServer (any one of them declaring a runtime suffices: the declaration is a fact about a cluster-scoped runtime,
    and every ClusterModelPolicy is a cluster admin's; a team's ModelPolicy cannot declare one)."""
    guard = deployment.spec.guard
    demand = policy.guard
    if guard is None and (demand is None or not (demand.required or demand.limits or drift_required(demand))):
        return policy_result(GATE, policy, "skip", "no guard declared or demanded")
    unguardable = _unguardable(deployment, mlserver_runtimes)
    if unguardable:
        return policy_result(
            GATE,
            policy,
            "fail",
            f"{unguardable}; a guard is {'demanded' if demand else 'declared'}",
            f"serve the model with runtime kind triton or on a ClusterServingRuntime declared in {_DECLARED}, or "
            "remove spec.guard where no policy demands one",
        )
    signed: bool | None = None
    if guard is not None and guard.drift is not None and drift_required(demand):
        try:
            found = signed_baseline(
                evidence.attestations,
                deployment.spec.model.digest,
                evaluation_authorities(cluster if policy.namespace else [policy]),
                verifier,
            )
        except VerificationUnavailable as exc:
            return policy_result(
                GATE, policy, "error", f"spec.guard.drift: the baseline's attestations: {exc.user_message}", "retry"
            )
        signed = bool(found)
    problems = guard_problems(guard, [(policy.name, demand)] if demand is not None else [], signed_baseline=signed)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return policy_result(
            GATE, policy, "fail", problems[0] + more, "make spec.guard at least as strict as the policy's guard.limits"
        )
    return policy_result(GATE, policy, "pass", "the guard is at least as strict as the policy demands")
