"""Prometheus metrics of the webhook (names as in DESIGN.md; low-cardinality labels only)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from devmlops.core.model import Decision

__all__ = ["WebhookMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class WebhookMetrics:
    registry: CollectorRegistry
    requests: Counter
    duration: Histogram
    gate_results: Counter
    gate_duration: Histogram
    cache_events: Counter
    registry_lookups: Counter
    certificate_expiry: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WebhookMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "devmlops_admission_requests_total",
                "Admission reviews answered, by kind, operation, verdict and policy mode.",
                ["kind", "operation", "allowed", "mode"],
                registry=registry,
            ),
            duration=Histogram(
                "devmlops_admission_duration_seconds",
                "Time to answer one admission review.",
                ["kind"],
                buckets=_BUCKETS,
                registry=registry,
            ),
            gate_results=Counter(
                "devmlops_gate_results_total",
                "Gate results, by gate and result (pass, fail, skip, error).",
                ["gate", "result"],
                registry=registry,
            ),
            gate_duration=Histogram(
                "devmlops_gate_duration_seconds",
                "Time spent in the cryptographic work of a gate.",
                ["gate"],
                buckets=_BUCKETS,
                registry=registry,
            ),
            cache_events=Counter(
                "devmlops_verification_cache_events_total",
                "Verification cache hits, misses, negative hits and evictions.",
                ["event"],
                registry=registry,
            ),
            registry_lookups=Counter(
                "devmlops_registry_lookups_total",
                "Model registry resolutions: answered from the cache (hit) or looked up (miss).",
                ["event"],
                registry=registry,
            ),
            certificate_expiry=Gauge(
                "devmlops_webhook_certificate_expiry_timestamp_seconds",
                "notAfter (unix seconds) of the TLS certificate the webhook serves now.",
                registry=registry,
            ),
        )

    def __post_init__(self) -> None:
        # At 0 from the start: DevmlopsFailClosedDenials takes an increase(), which a series born at 1 does not have, so
        # the webhook's first internal error would not alert. (Other gates' error series appear with their first
        # result of any outcome.)
        self.gate_results.labels("internal", "error")

    def observe(self, *, kind: str, operation: str, decision: Decision, seconds: float) -> None:
        mode = "warn" if decision.warnings else "enforce"
        self.requests.labels(kind, operation, str(decision.allowed).lower(), mode).inc()
        self.duration.labels(kind).observe(seconds)
        for result in decision.results:
            self.gate_results.labels(result.gate, result.outcome).inc()
