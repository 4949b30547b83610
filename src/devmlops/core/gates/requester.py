"""Who asked for a ModelDeployment: ``devmlops.io/requested-by`` and ``devmlops.io/requester-groups`` come from the
API request, never from the user.

The requester is whoever set what is served: the spec, all of it but the replica count (the model, its signature
and SBOM, the runtime, the rollout). The mutating webhook stamps them on create and on a change of what is served;
scaling, relabelling or annotating keeps the recorded requester, so nobody becomes "the other person" of four eyes
by touching a model someone else asked for. The groups are what four eyes asks the API server about the requester
with (may they act as the approving ServiceAccount?): rights held through a group count. This gate refuses any other
value of either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from devmlops.core.model import GateResult
from devmlops.core.review import AdmissionRequest

__all__ = [
    "GATE",
    "REQUESTED_BY",
    "REQUESTER_GROUPS",
    "check_requester",
    "groups_value",
    "read_groups",
    "recorded_groups",
    "requester_stamps",
    "served_fingerprint",
    "served_spec",
]

GATE = "requester"
REQUESTED_BY = "devmlops.io/requested-by"
REQUESTER_GROUPS = "devmlops.io/requester-groups"  # the requester's groups then, a sorted JSON list


def _annotation(obj: Mapping[str, Any] | None, key: str = REQUESTED_BY) -> str:
    return str((((obj or {}).get("metadata") or {}).get("annotations") or {}).get(key) or "")


def groups_value(groups: Sequence[str]) -> str:
    return json.dumps(sorted(set(groups)), separators=(",", ":"))


def recorded_groups(value: Any) -> tuple[str, ...] | None:
    """The stamped groups, or None when none are recorded: no stamp, or one that is no JSON list of strings."""
    try:
        parsed = json.loads(str(value or ""))
    except ValueError:
        return None
    if not isinstance(parsed, list) or not all(isinstance(g, str) for g in parsed):
        return None
    return tuple(parsed)


def read_groups(value: Any) -> tuple[str, ...]:
    """The stamped groups; anything unreadable is no groups at all."""
    return recorded_groups(value) or ()


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


def requester_stamps(request: AdmissionRequest) -> dict[str, str]:
    """The requester and their groups that a create or a change of what is served records (the request's); other
    updates keep the recorded ones (a model stamped before groups were recorded keeps none: '')."""
    old = request.old_object
    kept = request.operation == "UPDATE" and old is not None and served_spec(old) == served_spec(request.object)
    if kept and _annotation(old):
        return {REQUESTED_BY: _annotation(old), REQUESTER_GROUPS: _annotation(old, REQUESTER_GROUPS)}
    return {REQUESTED_BY: request.username, REQUESTER_GROUPS: groups_value(request.groups)}


def check_requester(request: AdmissionRequest) -> GateResult:
    expected = requester_stamps(request)
    for key, value in expected.items():
        found = _annotation(request.object, key)
        if found != value:
            return GateResult(
                gate=GATE,
                outcome="fail",
                reason=f"annotation {key}: got {found or 'nothing'!r}, expected {value!r} (taken from the request)",
                hint=f"do not set {key} yourself; the devmlops mutating webhook stamps it",
            )
    return GateResult(gate=GATE, outcome="pass", reason=f"requested by {expected[REQUESTED_BY]}")
