"""Status conditions, merged the Kubernetes way: lastTransitionTime moves only when the status changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["ConditionStatus", "set_condition"]

ConditionStatus = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Return a new list with condition ``type_`` set; the others are kept as they were."""

    def fresh(transition: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": transition,
        }

    merged = [dict(c) for c in conditions if c.get("type") != type_]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    if previous is None or previous.get("status") != status:
        transition = now
    else:
        transition = str(previous.get("lastTransitionTime", now))
    # Keep the condition's place in the list when it was there already.
    position = next((i for i, c in enumerate(conditions) if c.get("type") == type_), len(merged))
    merged.insert(position, fresh(transition))
    return merged
