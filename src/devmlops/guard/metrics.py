"""Prometheus metrics of the serving guard (one model per guard; low-cardinality labels only).

Drift statistics are computed when Prometheus scrapes (a collector over the guard's ``DriftSample``): the cost is
features x bins per scrape, nothing per request beyond binning the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from devmlops.core.drift import DriftSample

__all__ = ["GuardMetrics"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _DriftCollector(Collector):
    """PSI and binned KS per feature of the guard's sliding sample, its size and the threshold, at scrape time."""

    def __init__(self, model: str, digest: str, sample: DriftSample, threshold: float) -> None:
        self._labels = [model, digest]
        self._sample = sample
        self._threshold = threshold

    def collect(self) -> Iterator[GaugeMetricFamily]:
        psi = GaugeMetricFamily(
            "devmlops_guard_drift_psi",
            "Population stability index of each feature of the guard's input sample against the signed baseline.",
            labels=["model", "digest", "feature"],
        )
        ks = GaugeMetricFamily(
            "devmlops_guard_drift_ks",
            "Kolmogorov-Smirnov distance (on the baseline's bins) of each feature of the input sample.",
            labels=["model", "digest", "feature"],
        )
        for feature, psi_value, ks_value in self._sample.statistics():
            psi.add_metric([*self._labels, feature], psi_value)
            ks.add_metric([*self._labels, feature], ks_value)
        threshold = GaugeMetricFamily(
            "devmlops_guard_drift_threshold",
            "The PSI above which a feature counts as drifted (spec.guard.drift.threshold).",
            labels=["model", "digest"],
        )
        threshold.add_metric(self._labels, self._threshold)
        size = GaugeMetricFamily(
            "devmlops_guard_drift_sample_size",
            "Rows in the guard's sliding input sample now (at most spec.guard.drift.sampleSize).",
            labels=["model", "digest"],
        )
        size.add_metric(self._labels, len(self._sample))
        yield from (psi, ks, threshold, size)


@dataclass(frozen=True, slots=True)
class GuardMetrics:
    registry: CollectorRegistry
    requests: Counter
    duration: Histogram
    probes: Counter
    # The labelled series of each (model, digest, result, reason), looked up once: labels() took half of observe().
    _series: dict[tuple[str, str, str, str], tuple[Any, Any]] = field(default_factory=dict)

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> GuardMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "devmlops_guard_requests_total",
                "Requests to a served model through its guard, by result (allowed, logged, blocked, error) and "
                "reason (none, rate_limited, too_large, schema, injection, blocked_pattern, secret, pii, unreadable, "
                "upstream, upstream_status, internal).",
                ["model", "digest", "result", "reason"],
                registry=registry,
            ),
            duration=Histogram(
                "devmlops_guard_request_duration_seconds",
                "Time from a request's arrival at the guard to its answer (the model server's time included).",
                ["model", "digest"],
                buckets=_BUCKETS,
                registry=registry,
            ),
            probes=Counter(
                "devmlops_guard_probes",
                "Inference requests that repeat a recent input of the same client with small changes (quantized "
                "input seen within the window, other bytes): evasion probing.",
                ["model", "digest"],
                registry=registry,
            ),
        )

    def observe(self, model: str, digest: str, result: str, reason: str, seconds: float) -> None:
        key = (model, digest, result, reason)
        series = self._series.get(key)
        if series is None:  # bounded: the guard's own model and digest, and its few results and reasons
            series = self._series[key] = (self.requests.labels(*key), self.duration.labels(model, digest))
        series[0].inc()
        series[1].observe(seconds)

    def watch_drift(self, model: str, digest: str, sample: DriftSample, threshold: float) -> None:
        """Export the drift statistics of ``sample``, computed at each scrape."""
        self.registry.register(_DriftCollector(model, digest, sample, threshold))
