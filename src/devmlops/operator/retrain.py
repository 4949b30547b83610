"""When the inputs a served model sees have drifted from its signed baseline: a retrain request, decided here (no I/O).

The shell reads the serving version's per-feature drift (PSI, the guard's ``devmlops_guard_drift_psi``) from
Prometheus; a feature above ``spec.guard.drift.threshold`` makes one request per drift episode: a Warning Event
``RetrainRequested`` on the ModelDeployment and, where the cluster admins configured one, a POST of the same evidence
to the retraining pipeline's URL (``--retrain-webhook-url``). The request carries what was measured, for which
digest and against which threshold; it changes nothing that is served. A retrained model comes back like any other
version: signed, with its evidence, admitted by every gate and promoted only by the gated rollout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RETRAIN_KIND", "RequestRetrain", "retrain_step"]

RETRAIN_KIND = "RetrainRequest"  # the payload's kind (docs/operator.md, "Retrain requests")


@dataclass(frozen=True, slots=True)
class RequestRetrain:
    """Post the Event and, with a URL configured, the payload; ``payload`` is the request's JSON document."""

    payload: dict[str, Any]

    @property
    def message(self) -> str:
        drift = self.payload["drift"]
        features = ", ".join(f"{name} {value:.3g}" for name, value in drift["features"].items())
        return (
            f"inputs of {self.payload['model']['digest']} drifted from its signed baseline (PSI over "
            f"{drift['threshold']:g}: {features}); retrain, sign and roll out a new version"
        )


def retrain_step(
    model: Mapping[str, Any],
    *,
    digest: str,
    threshold: float | None,
    drift: Mapping[str, float] | None,
    now: str,
) -> tuple[dict[str, Any] | None, RequestRetrain | None]:
    """The ``status.retrain`` to write (None: leave it) and the request to make (None: none) for the serving version
    ``digest`` whose features measure ``drift`` (None: not measured; nothing changes)."""
    if drift is None or threshold is None:
        return None, None
    stored: Mapping[str, Any] = (model.get("status") or {}).get("retrain") or {}
    drifted = {name: drift[name] for name in sorted(drift) if drift[name] > threshold}
    if not drifted:
        if stored.get("active"):
            return {**stored, "active": False, "cleared": now}, None  # the episode is over: the next one asks again
        return None, None
    if stored.get("active") and stored.get("digest") == digest and stored.get("notified", True):
        return None, None  # asked once for this episode
    metadata = model.get("metadata") or {}
    spec_model = (model.get("spec") or {}).get("model") or {}
    payload = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": RETRAIN_KIND,
        "modelDeployment": {
            "namespace": metadata.get("namespace"),
            "name": metadata.get("name"),
            "uid": metadata.get("uid"),
        },
        "model": {"name": spec_model.get("name"), "uri": spec_model.get("uri"), "digest": digest},
        "drift": {"statistic": "psi", "threshold": threshold, "features": drifted, "measured": dict(drift)},
        "requested": now,
    }
    status = {"active": True, "digest": digest, "requested": now, "features": drifted}
    return status, RequestRetrain(payload)
