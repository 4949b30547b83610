"""Find the ModelApproval that lets a ModelDeployment be served: same namespace, names it, was given for this very
object (its uid) as it is now (its digest and served fingerprint), stamped with an approver other than its requester
whom every policy demanding approval at its effective tier still names (by user, or by the groups stamped when
approving), and not expired (the caller's clock decides)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from devmlops.core.approvalreview import (
    APPROVED_BY,
    APPROVED_SPEC,
    APPROVED_UID,
    APPROVER_GROUPS,
    not_a_second_person,
)
from devmlops.core.evidence import ApprovalState
from devmlops.core.gates.approval import refusing_approver
from devmlops.core.gates.compliance import EffectiveTier
from devmlops.core.gates.requester import REQUESTED_BY, read_groups, served_fingerprint
from devmlops.core.policy import Policy

__all__ = ["find_approval"]


def _expired(expires: str, now: dt.datetime) -> bool:
    if not expires:
        return False
    try:
        return dt.datetime.fromisoformat(expires) <= now
    except ValueError:
        return True  # an unreadable expiry never extends an approval


def find_approval(
    approvals: Iterable[Mapping[str, Any]],
    model: Mapping[str, Any],
    now: dt.datetime,
    *,
    judged_by: Callable[[], tuple[Sequence[Policy], EffectiveTier]],
) -> ApprovalState:
    """``judged_by()`` gives the policies that select ``model`` and its effective tier under them; it is called only
    when an approval names the model (most models have none, and the tier costs as much as a gate). When none
    counts, ``problem`` says why the first approval that names this ModelDeployment does not."""
    metadata = model.get("metadata") or {}
    namespace, name, uid = metadata.get("namespace"), metadata.get("name"), metadata.get("uid")
    digest = ((model.get("spec") or {}).get("model") or {}).get("digest")
    requester = (metadata.get("annotations") or {}).get(REQUESTED_BY)
    fingerprint = ""  # computed for the first approval that names this ModelDeployment (most models have none)
    judged: tuple[Sequence[Policy], EffectiveTier] | None = None
    problem = ""
    for approval in approvals:
        meta, spec = approval.get("metadata") or {}, approval.get("spec") or {}
        if meta.get("namespace") != namespace or spec.get("modelDeployment") != name:
            continue
        fingerprint = fingerprint or served_fingerprint(model)
        policies, tier = judged = judged or judged_by()
        annotations = meta.get("annotations") or {}
        approver = str(annotations.get(APPROVED_BY) or "")
        groups = read_groups(annotations.get(APPROVER_GROUPS))
        label = f"ModelApproval {meta.get('name')} by {approver or 'nobody'}"
        refusing = refusing_approver(policies, tier, approver, groups)
        why = ""
        if not uid or annotations.get(APPROVED_UID) != uid:
            given = annotations.get(APPROVED_UID) or "none"
            why = f"{label} was given for uid {given}, not this ModelDeployment ({uid}): it was recreated since"
        elif spec.get("digest") != digest:
            why = f"{label} approves {str(spec.get('digest'))[:19]}..., not {str(digest)[:19]}..."
        elif annotations.get(APPROVED_SPEC) != fingerprint:
            why = f"{label} was given before what is served changed (model, signature, SBOM, runtime or rollout)"
        elif second := not_a_second_person(approver, str(requester or ""), str(namespace or "")):
            why = f"{label}: {second}"
        elif _expired(str(spec.get("expires") or ""), now):
            why = f"{label} expired at {spec.get('expires')}"
        elif refusing:
            why = f"{label}: {approver!r} (groups {list(groups)}) is not an approver under {', '.join(refusing)} now"
        if why:
            problem = problem or why
            continue
        return ApprovalState(
            approved=True,
            approver=approver,
            name=str(meta.get("name")),
            expires=str(spec.get("expires") or ""),
            groups=groups,
        )
    return ApprovalState(approved=False, problem=problem)
