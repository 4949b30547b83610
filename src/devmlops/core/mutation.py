"""The small mutating webhook: stamp who asked (``requested-by``) and in which groups on a ModelDeployment, and on a
new ModelApproval who approved, in which groups, and exactly what (the target's uid and served fingerprint), all from
the request's userInfo and the target as the webhook's caches hold it, as a JSONPatch; a ModelDeployment's tags are
replaced by the digests the registry gave for them (``core.pinning``). A new ModelDeployment that declares no serving
guard where its policies demand one gets their limits as its ``spec.guard`` (a default it may then only tighten).
Pure, like the rest of the core: the shell looks the target and the policies up and passes them in."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from devmlops.core.approvalreview import approval_stamps
from devmlops.core.gates.requester import requester_stamps
from devmlops.core.guard import guard_config_json
from devmlops.core.manifests import Guard
from devmlops.core.pinning import pin_patch, pinned_object
from devmlops.core.review import AdmissionRequest

__all__ = ["stamp_patch"]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def stamp_patch(
    request: AdmissionRequest,
    *,
    target: Mapping[str, Any] | None = None,
    guard: Guard | None = None,
    pins: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The JSONPatch operations for a ModelDeployment or ModelApproval; empty for anything else. ``target`` is the
    ModelDeployment a ModelApproval names (None when it does not exist: the review then refuses the approval);
    ``guard`` the default guard for a new ModelDeployment that declares none (``core.guard.tightest``); ``pins`` the
    digests the registry gave for a ModelDeployment's tags (field -> digest, ``core.pinning``)."""
    kind = (request.kind.group, request.kind.kind)
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return []
    stamps: dict[str, str]
    pinned: list[dict[str, Any]] = []
    if kind == ("devmlops.io", "ModelDeployment"):
        pinned, pinned_from = pin_patch(request.object, pins or {})
        as_stored = dataclasses.replace(request, object=pinned_object(request.object, pins or {}))
        # A kept requester of a model stamped before groups were recorded keeps none: nothing to write for it.
        stamps = {key: value for key, value in {**requester_stamps(as_stored), **pinned_from}.items() if value}
    elif kind == ("devmlops.io", "ModelApproval") and request.operation == "CREATE":
        stamps = approval_stamps(request, target)
    else:
        return []
    annotations = (request.object.get("metadata") or {}).get("annotations")
    patch: list[dict[str, Any]]
    if not isinstance(annotations, dict):
        patch = [{"op": "add", "path": "/metadata/annotations", "value": stamps}]
    else:
        patch = [
            {"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}
            for key, value in stamps.items()
            if annotations.get(key) != value
        ]
    spec = request.object.get("spec")
    if guard is not None and request.operation == "CREATE" and isinstance(spec, dict) and "guard" not in spec:
        patch.append({"op": "add", "path": "/spec/guard", "value": json.loads(guard_config_json(guard))})
    return patch + pinned
