"""What serves a ModelDeployment while a new version is tried: read from its status, the same way by the operator
(which writes that status) and by the webhook (which admits the children against it).

A gated rollout (``spec.rollout.strategy: canary``, runtime triton) keeps the version that served last (its spec,
recorded in ``status.rollout.stableSpec``) under the ModelDeployment's own children while the spec's new digest runs
beside it as a canary; the stable version's guard forwards ``status.rollout.weight`` percent of the requests to it.
After a rollback the stable version serves alone until the spec changes again. The webhook decides the stable
version again, gate by gate, before it admits a child rendered from it: a status is never trusted because the
operator wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devmlops.core.manifests import ModelDeployment, parse_model_deployment
from devmlops.core.render import CanaryRendering, render_children

__all__ = [
    "PROGRESSING",
    "PROMOTED",
    "ROLLED_BACK",
    "STABLE",
    "Serves",
    "render_serving",
    "stable_model",
    "what_serves",
]

PROGRESSING, ROLLED_BACK, PROMOTED, STABLE = "Progressing", "RolledBack", "Promoted", "Stable"


@dataclass(frozen=True, slots=True)
class Serves:
    """``stable`` None: the spec's version alone. Else the stable version under the ModelDeployment's children and,
    with ``canary``, the spec's version beside it receiving ``weight`` percent."""

    stable: ModelDeployment | None = None
    canary: bool = False
    weight: int = 0


def stable_model(model_deployment: ModelDeployment, rollout: Mapping[str, Any]) -> ModelDeployment:
    """The ModelDeployment as it was when the stable version served (``InvalidInputError`` naming the field when the
    recorded spec does not parse)."""
    metadata = model_deployment.metadata
    raw = {
        "metadata": {"name": metadata.name, "namespace": metadata.namespace, "uid": metadata.uid},
        "spec": rollout.get("stableSpec"),
    }
    return parse_model_deployment(raw)


def _in_force(model_deployment: ModelDeployment, rollout: Mapping[str, Any], generation: int) -> bool:
    """The rollout status is about this spec: its generation and its new digest."""
    return (
        model_deployment.spec.gated_rollout is not None
        and rollout.get("generation") == generation
        and rollout.get("canaryDigest") == model_deployment.spec.model.digest
        and isinstance(rollout.get("stableSpec"), Mapping)
    )


def what_serves(model_deployment: ModelDeployment, status: Mapping[str, Any] | None, generation: int) -> Serves:
    """From ``status`` (the ModelDeployment's, as stored) and its ``metadata.generation``: a rollout in progress for
    this spec serves both versions; one rolled back for this spec, the stable one; anything else, the spec."""
    rollout = (status or {}).get("rollout") or {}
    if not isinstance(rollout, Mapping) or not _in_force(model_deployment, rollout, generation):
        return Serves()
    phase = rollout.get("phase")
    if phase == PROGRESSING:
        weight = rollout.get("weight")
        share = weight if isinstance(weight, int) and 0 <= weight <= 99 else 0
        return Serves(stable_model(model_deployment, rollout), canary=True, weight=share)
    if phase == ROLLED_BACK:
        return Serves(stable_model(model_deployment, rollout))
    return Serves()


def render_serving(
    model_deployment: ModelDeployment,
    status: Mapping[str, Any] | None,
    *,
    plan_json: str,
    stable_plan_json: str,
    verifier_image: str,
    policy_revision: str = "",
    baseline_json: str = "",
    stable_baseline_json: str = "",
) -> list[dict[str, Any]]:
    """The children as ``what_serves`` says: the operator writes them, the webhook compares against them. Each
    version's children carry that version's own plan and signed drift baseline."""
    serves = what_serves(model_deployment, status, model_deployment.metadata.generation)
    if serves.stable is not None and not serves.canary:
        return render_children(
            serves.stable,
            plan_json=stable_plan_json,
            verifier_image=verifier_image,
            policy_revision=policy_revision,
            baseline_json=stable_baseline_json,
        )
    canary = (
        CanaryRendering(serves.stable, stable_plan_json, serves.weight, stable_baseline_json)
        if serves.stable is not None
        else None
    )
    return render_children(
        model_deployment,
        plan_json=plan_json,
        verifier_image=verifier_image,
        policy_revision=policy_revision,
        canary=canary,
        baseline_json=baseline_json,
    )
