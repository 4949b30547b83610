"""Find the ModelApproval that lets a ModelDeployment be served: same namespace, names it, approves its current
digest, stamped with an approver other than its requester, and not expired (the caller's clock decides)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from devmlops.core.approvalreview import APPROVED_BY
from devmlops.core.evidence import ApprovalState
from devmlops.core.gates.requester import REQUESTED_BY

__all__ = ["find_approval"]


def _expired(expires: str, now: dt.datetime) -> bool:
    if not expires:
        return False
    try:
        return dt.datetime.fromisoformat(expires) <= now
    except ValueError:
        return True  # an unreadable expiry never extends an approval


def find_approval(approvals: Iterable[Mapping[str, Any]], model: Mapping[str, Any], now: dt.datetime) -> ApprovalState:
    metadata = model.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    digest = ((model.get("spec") or {}).get("model") or {}).get("digest")
    requester = (metadata.get("annotations") or {}).get(REQUESTED_BY)
    for approval in approvals:
        meta, spec = approval.get("metadata") or {}, approval.get("spec") or {}
        approver = (meta.get("annotations") or {}).get(APPROVED_BY, "")
        if (
            meta.get("namespace") == namespace
            and spec.get("modelDeployment") == name
            and spec.get("digest") == digest
            and approver
            and approver != requester
            and not _expired(str(spec.get("expires") or ""), now)
        ):
            return ApprovalState(
                approved=True, approver=approver, name=str(meta.get("name")), expires=str(spec.get("expires") or "")
            )
    return ApprovalState(approved=False)
