"""The small mutating webhook: stamp who asked (``requested-by``) on a ModelDeployment, and on a new ModelApproval
who approved, in which groups, and exactly what (the target's uid and served fingerprint), all from the request's
userInfo and the target as the webhook's caches hold it, as a JSONPatch. Pure, like the rest of the core: the shell
looks the target up and passes it in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.approvalreview import approval_stamps
from devmlops.core.gates.requester import REQUESTED_BY, expected_requester
from devmlops.core.review import AdmissionRequest

__all__ = ["stamp_patch"]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def stamp_patch(request: AdmissionRequest, *, target: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The JSONPatch operations for a ModelDeployment or ModelApproval; empty for anything else. ``target`` is the
    ModelDeployment a ModelApproval names (None when it does not exist: the review then refuses the approval)."""
    kind = (request.kind.group, request.kind.kind)
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return []
    stamps: dict[str, str]
    if kind == ("devmlops.io", "ModelDeployment"):
        stamps = {REQUESTED_BY: expected_requester(request)}
    elif kind == ("devmlops.io", "ModelApproval") and request.operation == "CREATE":
        stamps = approval_stamps(request, target)
    else:
        return []
    annotations = (request.object.get("metadata") or {}).get("annotations")
    if not isinstance(annotations, dict):
        return [{"op": "add", "path": "/metadata/annotations", "value": stamps}]
    return [
        {"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}
        for key, value in stamps.items()
        if annotations.get(key) != value
    ]
