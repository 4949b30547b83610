"""Admission of a ModelApproval: the approver (from the request) may approve under the policies that select the
ModelDeployment at its effective risk tier, is not the one who requested it, and approves its current digest before
it expires. The approval is bound to what it was given for: the mutating webhook stamps the target's uid and served
fingerprint and the approver's groups on create (``approval_stamps``), this review checks that the stamps are those,
and they never change afterwards. Where the model is served, ``find_approval`` requires the same uid and
fingerprint and checks the approver against the policies of that moment."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from devmlops.core.gates.approval import approval_required, refusing_approver
from devmlops.core.gates.compliance import effective_tier
from devmlops.core.gates.requester import REQUESTED_BY, groups_value, served_fingerprint
from devmlops.core.manifests import parse_model_approval, parse_model_deployment
from devmlops.core.model import Decision, GateResult
from devmlops.core.policy import Policy
from devmlops.core.review import AdmissionRequest
from devmlops.core.sbom import SbomSummary
from devmlops.errors import InvalidInputError

__all__ = [
    "APPROVAL_STAMPS",
    "APPROVED_BY",
    "APPROVED_SPEC",
    "APPROVED_UID",
    "APPROVER_GROUPS",
    "approval_stamps",
    "not_a_second_person",
    "requester_account",
    "review_approval",
]

APPROVED_BY = "devmlops.io/approved-by"
APPROVED_UID = "devmlops.io/approved-uid"  # metadata.uid of the ModelDeployment approved
APPROVED_SPEC = "devmlops.io/approved-spec"  # served_fingerprint() of it when approved
APPROVER_GROUPS = "devmlops.io/approver-groups"  # the approver's groups when approving, a sorted JSON list
APPROVAL_STAMPS = (APPROVED_BY, APPROVED_UID, APPROVED_SPEC, APPROVER_GROUPS)
GATE = "approval"


def not_a_second_person(approver: str, requester: str, namespace: str) -> str:
    """Why ``approver`` cannot be the second person of four eyes for a model ``requester`` asked for in ``namespace``
    ('' when they can): nobody, the requester, a ServiceAccount of that namespace, which every editor there can act
    as (the built-in edit role creates its tokens and impersonates it), the requester among them, or any
    ServiceAccount when a ServiceAccount requested it."""
    if not approver:
        return "no approver is stamped on it"
    if approver == requester:
        return f"approver {approver!r} requested this ModelDeployment"
    if approver.startswith(f"system:serviceaccount:{namespace}:"):
        return (
            f"the approver {approver!r} is a ServiceAccount of namespace {namespace}, which every editor there (the "
            f"requester {requester!r} among them) can act as: not a second person"
        )
    theirs, ours = requester_account(requester), requester_account(approver)
    if theirs and ours:
        # Whoever edits their namespaces acts as both (tokens, impersonation, Pods), and no access review can ask who
        # that is: asking whether either account may act as the other says nothing about that editor (second attack
        # round, one namespace; edit-role review, two namespaces that one person edits).
        where = f"namespace {ours[0]}" if theirs[0] == ours[0] else f"namespaces {theirs[0]} and {ours[0]}"
        return (
            f"the approver {approver!r} and the requester {requester!r} are both ServiceAccounts, and whoever edits "
            f"{where} can act as both: not a second person (a person must approve what a ServiceAccount requested)"
        )
    return ""


def requester_account(requester: str) -> tuple[str, str] | None:
    """The ServiceAccount (namespace, name) a requester is, or None for anyone else. Whoever may act as that account
    (the built-in edit role of its namespace creates its tokens, impersonates it, and runs Pods and token Secrets as
    it) may have asked for the model under its name: the webhook asks the API server whether the approver may
    (``Evidence.approver_acts_as``)."""
    prefix = "system:serviceaccount:"
    namespace, _sep, name = requester.removeprefix(prefix).partition(":")
    if not requester.startswith(prefix) or not namespace or not name or ":" in name:
        return None
    return namespace, name


def approval_stamps(request: AdmissionRequest, target: Mapping[str, Any] | None) -> dict[str, str]:
    """What the mutating webhook writes on a new ModelApproval: the request's user and groups, and the uid and served
    fingerprint of ``target`` (the ModelDeployment it names, empty when there is none)."""
    return {
        APPROVED_BY: request.username,
        APPROVER_GROUPS: groups_value(request.groups),
        APPROVED_UID: str(((target or {}).get("metadata") or {}).get("uid") or ""),
        APPROVED_SPEC: served_fingerprint(target) if target is not None else "",
    }


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _fail(reason: str, hint: str = "") -> Decision:
    return Decision((GateResult(gate=GATE, outcome="fail", reason=reason, hint=hint),))


def _review_update(request: AdmissionRequest) -> Decision:
    """An approval is immutable: only metadata may change, and never who approved, in which groups, or what."""
    old, new = request.old_object, request.object or {}
    if old is None:
        return _fail("an update of a ModelApproval must carry the old object")
    if (new.get("spec") or {}) != (old.get("spec") or {}):
        return _fail("spec: a ModelApproval is immutable; create a new one")
    for key in APPROVAL_STAMPS:
        before, after = _annotations(old).get(key), _annotations(new).get(key)
        if after != before:
            return _fail(
                f"annotation {key}: got {after!r}, expected {before!r} (unchanged): it binds the approval",
                "create a new ModelApproval instead",
            )
    return Decision((GateResult(gate=GATE, outcome="pass", reason="metadata change of an approval"),))


def review_approval(
    request: AdmissionRequest,
    target: Mapping[str, Any] | None,
    policies: Sequence[Policy],
    *,
    now: str,
    sbom: SbomSummary | None = None,
    acts_as: str = "",
    requester_acts_as: str = "",
) -> Decision:
    """``target`` is the ModelDeployment named by the approval; ``policies`` those that select it; ``sbom`` its SBOM
    (for its effective tier); ``now`` RFC 3339; ``acts_as`` how the approver may act as the ServiceAccount that
    requested the target ('' when they may not, or no ServiceAccount did); ``requester_acts_as`` how the requester
    may act as the approver, a ServiceAccount ('' when they may not, or the approver is none)."""
    approver = request.username
    if request.operation == "UPDATE":
        return _review_update(request)
    try:
        approval = parse_model_approval(request.object)
    except InvalidInputError as exc:
        return _fail(exc.user_message, "fix the ModelApproval field named above")
    spec, annotations = approval.spec, approval.metadata.annotations
    name = spec.model_deployment
    if target is None:
        return _fail(
            f"spec.modelDeployment: ModelDeployment {request.namespace}/{name} does not exist",
            "approve an existing ModelDeployment",
        )
    for key, expected in approval_stamps(request, target).items():
        if annotations.get(key) != expected:
            return _fail(
                f"annotation {key}: got {annotations.get(key)!r}, expected {expected!r} (taken from the request "
                f"and ModelDeployment {name} as it is now)",
                f"do not set {key}; the devmlops mutating webhook stamps it (is it installed?), or retry if "
                f"ModelDeployment {name} just changed",
            )
    try:
        current = parse_model_deployment(target).spec.model.digest
    except InvalidInputError as exc:
        return _fail(f"spec.modelDeployment: {exc.user_message}", "fix the ModelDeployment before approving it")
    if spec.digest != current:
        return _fail(
            f"spec.digest: got {spec.digest[:19]}..., but ModelDeployment {name} now serves {current[:19]}...",
            "approve the current digest",
        )
    generation = ((target.get("metadata") or {}).get("generation")) or 0
    if spec.generation is not None and spec.generation != generation:
        return _fail(
            f"spec.generation: got {spec.generation}, but ModelDeployment {name} is at generation {generation}: "
            "it changed since the approver read it",
            f"read ModelDeployment {name} again, review what changed, and approve its current generation",
        )
    requester = str(_annotations(target).get(REQUESTED_BY) or "")
    if not requester:
        return _fail(f"ModelDeployment {name} has no {REQUESTED_BY} annotation, so four eyes cannot be checked")
    second = not_a_second_person(approver, requester, request.namespace)
    if second:
        return _fail(f"{second}; a second person must approve (four eyes)", "ask an approver named by the policy")
    if acts_as:
        return _fail(
            f"{approver!r} can act as the requester {requester!r} ({acts_as}), so may have asked for the model under "
            "its name: not a second person; a second person must approve (four eyes)",
            "ask an approver named by the policy who cannot act as that ServiceAccount",
        )
    if requester_acts_as:
        return _fail(
            f"the requester {requester!r} may act as the approver {approver!r} ({requester_acts_as}), so may have "
            "approved under its name: not a second person; a second person must approve (four eyes)",
            "ask an approver named by the policy whom the requester cannot act as",
        )
    tier = effective_tier(target, policies, sbom)
    if not [p for p in policies if approval_required(p, tier)]:
        return _fail(
            f"no policy requires approval for ModelDeployment {name} at risk tier {tier.describe()}; nothing to approve"
        )
    refusing = refusing_approver(policies, tier, approver, request.groups)
    if refusing:
        return _fail(
            f"{approver!r} (groups {list(request.groups)}) is not an approver under {', '.join(refusing)}",
            "ask a user or group listed in compliance.approvers",
        )
    expires = spec.expires or ""
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
                reason=f"{approver} approves {name} (uid {annotations.get(APPROVED_UID)}) at {current[:19]}... "
                f"(requested by {requester}; risk tier {tier.describe()})",
            ),
        )
    )
