"""One module per admission gate; each takes data and returns a ``GateResult``."""

from __future__ import annotations

from devmlops.core.model import GateResult, Mode, Outcome
from devmlops.core.policy import Policy

__all__ = ["policy_result"]


def policy_result(
    gate: str, policy: Policy, outcome: Outcome, reason: str, hint: str = "", *, mode: Mode | None = None
) -> GateResult:
    """A gate's result under one policy, in that policy's mode unless ``mode`` overrides it."""
    return GateResult(
        gate=gate, policy=policy.name, mode=mode or policy.mode, outcome=outcome, reason=reason, hint=hint
    )
