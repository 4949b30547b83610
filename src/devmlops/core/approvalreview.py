"""Admission of a ModelApproval: the approver (from the request) may approve under the policies that select the
ModelDeployment, is not the one who requested it, and approves its current digest before it expires."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from devmlops.core.gates.approval import approval_required
from devmlops.core.gates.requester import REQUESTED_BY
from devmlops.core.model import Decision, GateResult
from devmlops.core.policy import Policy
from devmlops.core.review import AdmissionRequest

__all__ = ["APPROVED_BY", "review_approval"]

APPROVED_BY = "devmlops.io/approved-by"
GATE = "approval"


def _fail(reason: str, hint: str = "") -> Decision:
    return Decision((GateResult(gate=GATE, outcome="fail", reason=reason, hint=hint),))


def _review_update(request: AdmissionRequest) -> Decision:
    """An approval is immutable: only metadata may change, and never who approved."""
    old, new = request.old_object, request.object or {}
    if old is None:
        return _fail("an update of a ModelApproval must carry the old object")
    if (new.get("spec") or {}) != (old.get("spec") or {}):
        return _fail("spec: a ModelApproval is immutable; create a new one")

    def approved_by(obj: Mapping[str, Any]) -> Any:
        return ((obj.get("metadata") or {}).get("annotations") or {}).get(APPROVED_BY)

    if approved_by(new) != approved_by(old):
        return _fail(f"annotation {APPROVED_BY}: got {approved_by(new)!r}, expected {approved_by(old)!r} (unchanged)")
    return Decision((GateResult(gate=GATE, outcome="pass", reason="metadata change of an approval"),))


def review_approval(
    request: AdmissionRequest, target: Mapping[str, Any] | None, policies: Sequence[Policy], *, now: str
) -> Decision:
    """``target`` is the ModelDeployment named by the approval; ``policies`` those that select it; ``now`` RFC 3339."""
    obj = request.object or {}
    spec = obj.get("spec") or {}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    approver = request.username
    if request.operation == "UPDATE":
        return _review_update(request)
    if annotations.get(APPROVED_BY, approver) != approver:
        return _fail(
            f"annotation {APPROVED_BY}: got {annotations[APPROVED_BY]!r}, expected {approver!r} (the request's user)",
            f"do not set {APPROVED_BY}; it is stamped from the request",
        )
    name = str(spec.get("modelDeployment") or "")
    if target is None:
        return _fail(
            f"spec.modelDeployment: ModelDeployment {request.namespace}/{name} does not exist",
            "approve an existing ModelDeployment",
        )
    current = str(((target.get("spec") or {}).get("model") or {}).get("digest") or "")
    if spec.get("digest") != current:
        return _fail(
            f"spec.digest: got {str(spec.get('digest'))[:19]}..., but ModelDeployment {name} now serves "
            f"{current[:19]}...",
            "approve the current digest",
        )
    requester = str(((target.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_BY) or "")
    if not requester:
        return _fail(f"ModelDeployment {name} has no {REQUESTED_BY} annotation, so four eyes cannot be checked")
    if requester == approver:
        return _fail(f"approver {approver!r} requested this ModelDeployment; a second person must approve (four eyes)")
    demanding = [p for p in policies if approval_required(target, p)]
    if not demanding:
        return _fail(f"no policy requires approval for ModelDeployment {name}; nothing to approve")
    refusing = [p.name for p in demanding if not (p.compliance and p.compliance.may_approve(approver, request.groups))]
    if refusing:
        return _fail(
            f"{approver!r} (groups {list(request.groups)}) is not an approver under {', '.join(refusing)}",
            "ask a user or group listed in compliance.approvers",
        )
    expires = str(spec.get("expires") or "")
    if expires:
        try:
            past = dt.datetime.fromisoformat(expires) <= dt.datetime.fromisoformat(now)
        except ValueError:
            return _fail(f"spec.expires: got {expires!r}, expected an RFC 3339 time with a zone")
        if past:
            return _fail(f"spec.expires: {expires} is already past ({now})")
    return Decision(
        (
            GateResult(
                gate=GATE,
                outcome="pass",
                reason=f"{approver} approves {name} at {current[:19]}... (requested by {requester})",
            ),
        )
    )
