"""May this ModelDeployment be served now? The one question the webhook (for a child or Pod of a model), the
operator (re-checking a stored model) and `devmlops check` (before a push) ask, answered by the one ``decide()``.

They differ only in the stage: "serving" adds the approval gate (the webhook, for what runs); "admission" is what
the API server asked when the object was written (the operator tracks approvals as a phase of its own; the CLI
checks a manifest before it is applied). This module is the one place that builds the request for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.decision import decide
from devmlops.core.evidence import Evidence
from devmlops.core.gates.rego import Stage
from devmlops.core.model import Decision
from devmlops.core.policy import PolicySet
from devmlops.core.ports import PolicyEngine, SignatureVerifier
from devmlops.core.review import AdmissionRequest, GroupVersionKind, Operation

__all__ = ["may_serve", "model_request"]


def model_request(
    model: Mapping[str, Any],
    *,
    uid: str,
    username: str,
    groups: tuple[str, ...] = (),
    operation: Operation = "UPDATE",
) -> AdmissionRequest:
    """The ModelDeployment as an AdmissionRequest decided again: an UPDATE that changes nothing (old == new), or a
    CREATE for a manifest not applied yet."""
    metadata = model.get("metadata") or {}
    return AdmissionRequest(
        uid=uid,
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation=operation,
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata.get("name") or ""),
        username=username,
        groups=groups,
        object=model,
        old_object=model if operation == "UPDATE" else None,
    )


def may_serve(
    model: Mapping[str, Any],
    policies: PolicySet,
    evidence: Evidence,
    verifier: SignatureVerifier,
    engine: PolicyEngine | None = None,
    *,
    stage: Stage = "serving",
    request: AdmissionRequest | None = None,
) -> Decision:
    """``model`` decided under ``policies`` with its ``evidence``; ``request`` (``model_request``) says who asks."""
    asked = request or model_request(model, uid=f"serving-{(model.get('metadata') or {}).get('uid', '')}", username="")
    return decide(asked, policies, evidence, verifier, engine, stage=stage)
