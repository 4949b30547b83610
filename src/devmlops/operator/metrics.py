"""Prometheus metrics of the operator (names as in DESIGN.md; low-cardinality labels only)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ROLLOUT_EVENTS", "OperatorMetrics", "metrics"]

# The Events of gated rollouts and retrain requests that devmlops_rollout_steps_total counts.
ROLLOUT_EVENTS = ("RolloutStarted", "RolloutStep", "Promoted", "RolledBack", "RetrainRequested")


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reconciles = Counter(
            "devmlops_reconcile_total",
            "Reconciliations, by kind and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.model_deployments = Gauge(
            "devmlops_model_deployments", "ModelDeployments by phase.", ["phase"], registry=self.registry
        )
        self.certificate_expiry = Gauge(
            "devmlops_certificate_expiry_timestamp_seconds",
            "notAfter (unix seconds) of the webhook certificates the operator keeps, by certificate (ca, serving).",
            ["certificate"],
            registry=self.registry,
        )
        self.certificate_rotations = Counter(
            "devmlops_certificate_rotations_total",
            "Certificates the operator issued, by certificate (ca, serving).",
            ["certificate"],
            registry=self.registry,
        )
        self.child_drift = Counter(
            "devmlops_child_drift_total",
            "Children found differing from what devmlops renders and replaced whole, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.rollout_steps = Counter(
            "devmlops_rollout_steps_total",
            "Steps of gated rollouts and retrain requests, by event (RolloutStarted, RolloutStep, Promoted, "
            "RolledBack, RetrainRequested).",
            ["event"],
            registry=self.registry,
        )
        # Exported at 0 from the start what alerts take a rate or an increase of: a series born at 1 has neither, so
        # the first rollback (or reconcile error) of an operator's life would not alert.
        for event in ROLLOUT_EVENTS:
            self.rollout_steps.labels(event)
        self.reconciles.labels("ModelDeployment", "error")
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()

    def record_phase(self, key: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts: dict[str, int] = {}
            for value in self._phases.values():
                counts[value] = counts.get(value, 0) + 1
        for known in ("Admitted", "AwaitingApproval", "Degraded", *counts):
            self.model_deployments.labels(known).set(counts.get(known, 0))


metrics = OperatorMetrics()
