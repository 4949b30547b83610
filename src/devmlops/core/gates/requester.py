"""Who asked for a ModelDeployment: ``devmlops.io/requested-by`` comes from the API request, never from the user.

The mutating webhook stamps it; this gate refuses any other value, so four-eyes approval cannot be gamed by
writing someone else's name into the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.model import GateResult
from devmlops.core.review import AdmissionRequest

__all__ = ["GATE", "REQUESTED_BY", "check_requester", "expected_requester"]

GATE = "requester"
REQUESTED_BY = "devmlops.io/requested-by"


def _annotation(obj: Mapping[str, Any] | None) -> str:
    return str((((obj or {}).get("metadata") or {}).get("annotations") or {}).get(REQUESTED_BY) or "")


def expected_requester(request: AdmissionRequest) -> str:
    """The requester a create or a spec change records; other updates keep the recorded one."""
    if request.operation == "UPDATE" and request.old_object is not None:
        old_spec = request.old_object.get("spec")
        new_spec = (request.object or {}).get("spec")
        if old_spec == new_spec:
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
