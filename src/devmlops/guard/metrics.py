"""Prometheus metrics of the serving guard (one model per guard; low-cardinality labels only)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["GuardMetrics"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class GuardMetrics:
    registry: CollectorRegistry
    requests: Counter
    duration: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> GuardMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "devmlops_guard_requests_total",
                "Requests to a served model through its guard, by result (allowed, logged, blocked, error) and "
                "reason (none, rate_limited, too_large, schema, injection, blocked_pattern, secret, pii, unreadable, "
                "upstream, internal).",
                ["model", "result", "reason"],
                registry=registry,
            ),
            duration=Histogram(
                "devmlops_guard_request_duration_seconds",
                "Time from a request's arrival at the guard to its answer (the model server's time included).",
                ["model"],
                buckets=_BUCKETS,
                registry=registry,
            ),
        )

    def observe(self, model: str, result: str, reason: str, seconds: float) -> None:
        self.requests.labels(model, result, reason).inc()
        self.duration.labels(model).observe(seconds)
