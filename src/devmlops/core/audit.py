"""The audit record: one JSON-ready mapping per decision, with nothing secret in it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.model import Decision
from devmlops.core.review import AdmissionRequest

__all__ = ["audit_record"]


def _digest(request: AdmissionRequest) -> str:
    """The model digest a ModelDeployment asks for ("" for other kinds and for malformed objects)."""
    spec = (request.object or {}).get("spec")
    model = spec.get("model") if isinstance(spec, Mapping) else None
    digest = model.get("digest") if isinstance(model, Mapping) else None
    return digest if isinstance(digest, str) else ""


def audit_record(request: AdmissionRequest, decision: Decision, *, latency_seconds: float) -> dict[str, Any]:
    """Who asked for what, which model and signer, under which policies, what each gate found, and how long it took
    (no bundles, SBOMs or tokens)."""
    return {
        "uid": request.uid,
        "kind": request.kind.kind,
        "operation": request.operation,
        "namespace": request.namespace,
        "name": request.name,
        "user": request.username,
        "allowed": decision.allowed,
        "mode": "warn" if decision.warnings else "enforce",
        "digest": _digest(request),
        "signer": decision.signer,
        "policyRevision": decision.policy_revision,
        "dryRun": request.dry_run,
        "gates": [
            {"gate": r.gate, "policy": r.policy, "result": r.outcome, "mode": r.mode, "reason": r.reason}
            for r in decision.results
        ],
        "latencyMs": round(latency_seconds * 1000, 3),
    }
