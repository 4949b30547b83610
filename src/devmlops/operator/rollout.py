"""The gated rollout's next step, decided from the stored status, what the shell measured and the time (no I/O).

A new digest in the spec of a ModelDeployment with ``spec.rollout.strategy: canary`` (runtime triton) does not
replace the version that serves: it starts beside it (``Progressing``, step -1, no traffic) and, once ready, receives
the first step's share through the stable version's guard. Each step lasts ``stepSeconds``; at every tick the new
version's figures over that window (its guard's metrics in Prometheus: error rate, blocked rate, p99 latency, drift)
are checked against ``spec.rollout.canary.analysis``: a figure over its bound, an analysis that cannot run, or a
new version that is not ready (within ``readySeconds`` at first, at any time later) rolls back at once; a step whose
window passed with enough requests moves on; after the last step the new version is promoted (it becomes the stable
version and serves alone). The new version has passed every gate already: the admission of the spec, and the
operator's own decision, which comes before this.

Status (``status.rollout``) is the only state; core/rollout.py reads the same status to render the children.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from devmlops.core.manifests import Analysis, Canary, ModelDeployment
from devmlops.core.rollout import PROGRESSING, PROMOTED, ROLLED_BACK, STABLE

__all__ = ["Check", "Measured", "RolloutStep", "analyse", "next_step", "rolling_out"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """The new version's figures over the step's window, as the shell read them (None: no figure)."""

    requests: float | None = None
    error_rate: float | None = None
    blocked_rate: float | None = None
    p99_seconds: float | None = None
    drift_psi: float | None = None
    error: str = ""  # the analysis could not run (Prometheus unreachable, a query refused): a failure


@dataclass(frozen=True, slots=True)
class Check:
    check: str
    value: float | None
    bound: float
    passed: bool

    def as_status(self) -> dict[str, Any]:
        return {"check": self.check, "value": self.value, "bound": self.bound, "passed": self.passed}

    def describe(self) -> str:
        found = "no figure" if self.value is None else f"{self.value:.4g}"
        return f"{self.check} {found} (bound {self.bound:g})"


Verdict = Literal["pass", "fail", "wait"]


def analyse(measured: Measured, analysis: Analysis) -> tuple[Verdict, tuple[Check, ...], str]:
    """The verdict on one window, the checks behind it and why. Too few requests: wait (nothing is judged on a
    handful); a bound whose figure is missing fails (fail closed: drift bounded but no signed baseline, say)."""
    if measured.error:
        return "fail", (), f"the analysis could not run: {measured.error}"
    requests = measured.requests or 0.0
    if requests < analysis.min_requests:
        return "wait", (), f"{requests:.0f} of the {analysis.min_requests} requests a step needs"
    bounds = (
        ("errorRate", analysis.max_error_rate, measured.error_rate),
        ("blockedRate", analysis.max_blocked_rate, measured.blocked_rate),
        ("p99LatencySeconds", analysis.max_p99_latency_seconds, measured.p99_seconds),
        ("driftPsi", analysis.max_drift_psi, measured.drift_psi),
    )
    checks = tuple(
        Check(name, value, bound, value is not None and value <= bound)
        for name, bound, value in bounds
        if bound is not None
    )
    failed = [c.describe() for c in checks if not c.passed]
    if failed:
        return "fail", checks, "over its bound: " + "; ".join(failed)
    return "pass", checks, f"{requests:.0f} requests, every bound kept"


@dataclass(frozen=True, slots=True)
class RolloutStep:
    """The rollout status to write (None: leave it as it is) and the Events of the transition."""

    status: dict[str, Any] | None
    events: tuple[tuple[Literal["Normal", "Warning"], str, str], ...] = ()
    analyse: bool = False  # for the shell: a step is running, measure the new version next time
    promoted: bool = False


def _time(value: Any) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec(model: Mapping[str, Any]) -> dict[str, Any]:
    return dict(model.get("spec") or {})


def _stable(
    model: Mapping[str, Any], parsed: ModelDeployment, generation: int, phase: str, message: str
) -> RolloutStep:
    """The spec's version serves alone and is the stable version from now on."""
    status = {
        "phase": phase,
        "generation": generation,
        "stableSpec": _spec(model),
        "stableDigest": parsed.spec.model.digest,
        "message": message,
    }
    return RolloutStep(status)


def next_step(
    model: Mapping[str, Any],
    parsed: ModelDeployment,
    *,
    canary_ready: tuple[bool, str],
    measured: Measured | None,
    now: dt.datetime,
) -> RolloutStep:
    """The rollout's next state for an admitted, verified ModelDeployment with a gated rollout (``parsed.spec.
    gated_rollout``): ``canary_ready`` is whether the new version's Deployment is available (and why not);
    ``measured`` the new version's figures when a step is running (None otherwise)."""
    canary = parsed.spec.gated_rollout
    if canary is None:
        return RolloutStep(None)
    generation = parsed.metadata.generation
    digest = parsed.spec.model.digest
    rollout: Mapping[str, Any] = (model.get("status") or {}).get("rollout") or {}
    stable_spec = rollout.get("stableSpec")
    if not isinstance(stable_spec, Mapping) or rollout.get("stableDigest") == digest:
        # Served first, or the same version with other settings: it serves alone (nothing new to try).
        phase = rollout.get("phase") if rollout.get("phase") in (PROMOTED, STABLE) else STABLE
        return _stable(model, parsed, generation, str(phase), str(rollout.get("message") or "serving the spec"))
    if not (stable_spec.get("guard")):
        return _stable(
            model,
            parsed,
            generation,
            PROMOTED,
            "replaced directly: the version that served had no guard to split the traffic",
        )
    same = rollout.get("canaryDigest") == digest and rollout.get("generation") == generation
    if same and rollout.get("phase") == ROLLED_BACK:
        return RolloutStep(None)  # rolled back for this spec: the stable version serves until the spec changes
    if not same or rollout.get("phase") != PROGRESSING:
        return _start(rollout, digest, generation, now)
    return _progress(rollout, canary, canary_ready, measured, now, _spec(model))


def _start(rollout: Mapping[str, Any], digest: str, generation: int, now: dt.datetime) -> RolloutStep:
    status = {
        "phase": PROGRESSING,
        "generation": generation,
        "stableSpec": rollout["stableSpec"],
        "stableDigest": rollout.get("stableDigest"),
        "canaryDigest": digest,
        "step": -1,
        "weight": 0,
        "started": _stamp(now),
        "stepStarted": _stamp(now),
        "analysis": [],
        "message": f"starting {digest} beside {rollout.get('stableDigest')}; no traffic until it is ready",
    }
    return RolloutStep(status, (("Normal", "RolloutStarted", status["message"]),))


def _progress(
    rollout: Mapping[str, Any],
    canary: Canary,
    canary_ready: tuple[bool, str],
    measured: Measured | None,
    now: dt.datetime,
    spec: dict[str, Any],
) -> RolloutStep:
    step = int(rollout.get("step", -1))
    weights = canary.weights
    ready, why_not = canary_ready
    started = _time(rollout.get("started")) or now
    step_started = _time(rollout.get("stepStarted")) or now
    if step < 0:
        if ready:
            return _to_step(rollout, 0, weights[0], now, (), f"ready; step 1 of {len(weights)}: {weights[0]}%")
        if (now - started).total_seconds() > canary.ready_seconds:
            return _roll_back(rollout, (), f"not ready within {canary.ready_seconds} s: {why_not}")
        return RolloutStep(None)
    if not ready:
        return _roll_back(rollout, (), f"no longer ready: {why_not}")
    verdict, checks, why = analyse(measured or Measured(error="no figures were read"), canary.analysis)
    if verdict == "fail":
        return _roll_back(rollout, checks, why)
    elapsed = (now - step_started).total_seconds()
    if verdict == "pass" and elapsed >= canary.step_seconds:
        if step + 1 < len(weights):
            share = weights[step + 1]
            said = f"step {step + 1} passed ({why}); step {step + 2} of {len(weights)}: {share}%"
            return _to_step(rollout, step + 1, share, now, checks, said)
        return _promote(rollout, spec, checks, f"promoted after {len(weights)} step(s): {why}")
    status = {**rollout, "analysis": [c.as_status() for c in checks], "message": f"step {step + 1}: {why}"}
    return RolloutStep(status if status != dict(rollout) else None, analyse=True)


def _to_step(
    rollout: Mapping[str, Any], step: int, weight: int, now: dt.datetime, checks: tuple[Check, ...], message: str
) -> RolloutStep:
    status = {
        **rollout,
        "step": step,
        "weight": weight,
        "stepStarted": _stamp(now),
        "analysis": [c.as_status() for c in checks],
        "message": message,
    }
    return RolloutStep(status, (("Normal", "RolloutStep", message),), analyse=True)


def _roll_back(rollout: Mapping[str, Any], checks: tuple[Check, ...], why: str) -> RolloutStep:
    message = f"{rollout.get('canaryDigest')} rolled back to {rollout.get('stableDigest')}: {why}"
    status = {
        **rollout,
        "phase": ROLLED_BACK,
        "weight": 0,
        "analysis": [c.as_status() for c in checks],
        "message": message,
    }
    return RolloutStep(status, (("Warning", "RolledBack", message),))


def _promote(rollout: Mapping[str, Any], spec: dict[str, Any], checks: tuple[Check, ...], message: str) -> RolloutStep:
    """The new version becomes the stable one and serves alone (its spec recorded as the stable spec)."""
    status = {
        **rollout,
        "phase": PROMOTED,
        "stableSpec": spec,
        "stableDigest": rollout.get("canaryDigest"),
        "weight": 0,
        "analysis": [c.as_status() for c in checks],
        "message": message,
    }
    return RolloutStep(status, (("Normal", "Promoted", message),), promoted=True)


def rolling_out(status: Mapping[str, Any] | None) -> bool:
    """A rollout is in progress: the operator looks at it again every few seconds, not at the next re-check round."""
    return ((status or {}).get("rollout") or {}).get("phase") == PROGRESSING
