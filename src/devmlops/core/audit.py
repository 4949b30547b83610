"""The audit record: one JSON-ready mapping per decision, with nothing secret in it."""

from __future__ import annotations

from typing import Any

from devmlops.core.model import Decision
from devmlops.core.review import AdmissionRequest

__all__ = ["audit_record"]


def audit_record(request: AdmissionRequest, decision: Decision, *, latency_seconds: float) -> dict[str, Any]:
    """Who asked for what, what each gate found, and how long it took (no bundles, SBOMs or tokens)."""
    return {
        "uid": request.uid,
        "kind": request.kind.kind,
        "operation": request.operation,
        "namespace": request.namespace,
        "name": request.name,
        "user": request.username,
        "allowed": decision.allowed,
        "dryRun": request.dry_run,
        "gates": [
            {"gate": r.gate, "policy": r.policy, "result": r.outcome, "mode": r.mode, "reason": r.reason}
            for r in decision.results
        ],
        "latencyMs": round(latency_seconds * 1000, 3),
    }
