"""The guard gate: where a ClusterModelPolicy demands a serving guard, the ModelDeployment declares one at least as
strict (``spec.guard``, drift monitoring included), and its runtime is one devmlops can put the guard in front of."""

from __future__ import annotations

from collections.abc import Sequence

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
# Runtimes whose rendering puts the guard in front of the model server (core/render.py). A KServe predictor's
# Service targets its model container, and its predictor Service stays reachable: not yet guarded (docs/guard.md).
GUARDED_RUNTIMES = ("triton",)


def check_guard(
    deployment: ModelDeployment,
    policy: Policy,
    evidence: Evidence,
    verifier: SignatureVerifier,
    *,
    cluster: Sequence[Policy] = (),
) -> GateResult:
    """Where the policy requires drift monitoring, the model's evaluation evidence (``spec.attestations``) must carry
    a baseline signed by one of the policy's authorities (``core/baseline.py``, as rendering picks it); for a team's
    ModelPolicy, by one of the selecting ClusterModelPolicies' (``cluster``), the only ones rendering takes it from."""
    guard, kind = deployment.spec.guard, deployment.spec.runtime.kind
    demand = policy.guard
    if guard is None and (demand is None or not (demand.required or demand.limits or drift_required(demand))):
        return policy_result(GATE, policy, "skip", "no guard declared or demanded")
    if kind not in GUARDED_RUNTIMES:
        return policy_result(
            GATE,
            policy,
            "fail",
            f"spec.runtime.kind: found '{kind}', expected one of {list(GUARDED_RUNTIMES)}: a guard is "
            f"{'demanded' if demand else 'declared'} and devmlops renders it for those runtimes only",
            "serve the model with runtime kind triton, or remove spec.guard where no policy demands one",
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
