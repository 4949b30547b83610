"""The small mutating webhook: stamp who asked (``requested-by``) and who approved (``approved-by``) from the
request's userInfo, as a JSONPatch. Pure, like the rest of the core."""

from __future__ import annotations

from typing import Any

from devmlops.core.approvalreview import APPROVED_BY
from devmlops.core.gates.requester import REQUESTED_BY, expected_requester
from devmlops.core.review import AdmissionRequest

__all__ = ["stamp_patch"]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def stamp_patch(request: AdmissionRequest) -> list[dict[str, Any]]:
    """The JSONPatch operations for a ModelDeployment or ModelApproval; empty for anything else."""
    kind = (request.kind.group, request.kind.kind)
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return []
    if kind == ("devmlops.io", "ModelDeployment"):
        key, value = REQUESTED_BY, expected_requester(request)
    elif kind == ("devmlops.io", "ModelApproval") and request.operation == "CREATE":
        key, value = APPROVED_BY, request.username
    else:
        return []
    annotations = (request.object.get("metadata") or {}).get("annotations")
    if not isinstance(annotations, dict):
        return [{"op": "add", "path": "/metadata/annotations", "value": {key: value}}]
    if annotations.get(key) == value:
        return []
    return [{"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}]
