"""Frozen value types that the gates and ``decide()`` exchange.

A ``Decision`` keeps one ``GateResult`` per gate and policy so that the response, the audit line and the
operator's status can all say what was checked, what was found and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Decision", "GateResult", "Mode", "Outcome"]

Outcome = Literal["pass", "fail", "skip", "error"]
Mode = Literal["enforce", "warn"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GateResult:
    """The verdict of one gate for one policy."""

    gate: str
    outcome: Outcome
    reason: str
    hint: str = ""
    policy: str = ""
    mode: Mode = "enforce"

    @property
    def failed(self) -> bool:
        """A fail or an error: both deny in enforce mode (errors fail closed)."""
        return self.outcome in ("fail", "error")

    @property
    def blocking(self) -> bool:
        return self.failed and self.mode == "enforce"

    def describe(self) -> str:
        """One sentence for a person: gate, policy, reason and, when there is one, how to fix it."""
        where = f"{self.gate} gate" + (f" (policy {self.policy})" if self.policy else "")
        text = f"{where}: {self.reason}"
        return f"{text}; fix: {self.hint}" if self.hint else text


@dataclass(frozen=True, slots=True)
class Decision:
    """Per-gate results; admitted only when there is at least one result and none of them blocks. ``signer`` is
    the identity whose signature was verified (empty when none was) and ``policy_revision`` the revision of the
    policies decided under, both for the audit line."""

    results: tuple[GateResult, ...]
    signer: str = ""
    policy_revision: str = ""

    @property
    def allowed(self) -> bool:
        return bool(self.results) and not any(result.blocking for result in self.results)

    @property
    def message(self) -> str:
        """The first blocking result leads, as the person reading a 403 needs it first."""
        blocking = [result for result in self.results if result.blocking]
        if blocking:
            more = f" (and {len(blocking) - 1} more failure(s))" if len(blocking) > 1 else ""
            return f"denied by devmlops: {blocking[0].describe()}{more}"
        if not self.results:
            return "denied by devmlops: no gate produced a result, which is never an admission"
        return "admitted by devmlops"

    @property
    def warnings(self) -> tuple[str, ...]:
        """Failures of warn-mode policies, returned to the client as AdmissionReview warnings."""
        return tuple(result.describe() for result in self.results if result.failed and result.mode == "warn")
