"""``decide()``: the one decision function that the webhook, the operator and the CLI share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.gates.signature import check_signature_present
from devmlops.core.model import Decision, GateResult
from devmlops.core.review import AdmissionRequest

__all__ = ["MODEL_DEPLOYMENT", "decide"]

MODEL_DEPLOYMENT = ("devmlops.io", "ModelDeployment")


def decide(request: AdmissionRequest) -> Decision:
    """Run the gates that apply to the request's kind and operation, in order."""
    if request.operation == "DELETE":
        return Decision((GateResult(gate="operation", outcome="pass", reason="deletion is always allowed"),))
    if (request.kind.group, request.kind.kind) == MODEL_DEPLOYMENT:
        return _decide_model_deployment(request)
    kind = f"{request.kind.kind}.{request.kind.group or 'core'}"
    return Decision(
        (
            GateResult(
                gate="kind",
                outcome="error",
                reason=f"devmlops has no rule for kind {kind}: got {kind}, expected ModelDeployment.devmlops.io",
                hint="remove this kind from the devmlops webhook configuration's rules",
            ),
        )
    )


def _decide_model_deployment(request: AdmissionRequest) -> Decision:
    obj = request.object
    spec: Any = obj.get("spec") if obj is not None else None
    if not isinstance(spec, Mapping):
        return Decision(
            (
                GateResult(
                    gate="manifest",
                    outcome="error",
                    reason="the ModelDeployment has no spec object: got nothing, expected spec.model and spec.runtime",
                ),
            )
        )
    return Decision((check_signature_present(spec),))
