"""Who asked for a ModelDeployment: ``devmlops.io/requested-by`` comes from the API request, never from the user.

The requester is whoever set what is served: the spec, all of it but the replica count (the model, its signature
and SBOM, the runtime, the rollout). The mutating webhook stamps it on create and on a change of what is served;
scaling, relabelling or annotating keeps the recorded requester, so nobody becomes "the other person" of four eyes
by touching a model someone else asked for. This gate refuses any other value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from devmlops.core.model import GateResult
from devmlops.core.review import AdmissionRequest

__all__ = ["GATE", "REQUESTED_BY", "check_requester", "expected_requester", "served_fingerprint", "served_spec"]

GATE = "requester"
REQUESTED_BY = "devmlops.io/requested-by"


def _annotation(obj: Mapping[str, Any] | None) -> str:
    return str((((obj or {}).get("metadata") or {}).get("annotations") or {}).get(REQUESTED_BY) or "")


def served_spec(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a ModelDeployment serves: its spec without ``runtime.replicas`` (how many copies is not what)."""
    spec = dict((obj or {}).get("spec") or {})
    runtime = spec.get("runtime")
    if isinstance(runtime, Mapping):
        spec["runtime"] = {key: value for key, value in runtime.items() if key != "replicas"}
    return spec


def served_fingerprint(obj: Mapping[str, Any] | None) -> str:
    """``sha256:<hex>`` of ``served_spec()`` as canonical JSON: what an approval binds besides uid and digest."""
    text = json.dumps(served_spec(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def expected_requester(request: AdmissionRequest) -> str:
    """The requester a create or a change of what is served records; other updates keep the recorded one."""
    if (
        request.operation == "UPDATE"
        and request.old_object is not None
        and served_spec(request.old_object) == served_spec(request.object)
    ):
        return _annotation(request.old_object) or request.username
    return request.username


def check_requester(request: AdmissionRequest) -> GateResult:
    found, expected = _annotation(request.object), expected_requester(request)
    if found != expected:
        return GateResult(
            gate=GATE,
            outcome="fail",
            reason=f"annotation {REQUESTED_BY}: got {found or 'nothing'!r}, expected {expected!r} "
            "(taken from the request)",
            hint=f"do not set {REQUESTED_BY} yourself; the devmlops mutating webhook stamps it",
        )
    return GateResult(gate=GATE, outcome="pass", reason=f"requested by {expected}")
