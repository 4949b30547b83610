"""The new version's figures for a rollout step, read from Prometheus: what its guard counted (requests, errors,
refusals, durations, drift), selected by namespace, ModelDeployment and digest over the step's window.

The guard labels its metrics with the model (the ModelDeployment's name) and the digest it guards; the scrape adds
``namespace`` (prometheus-operator's PodMonitor does; docs/metrics.md). Any failure to read is a figure-less
``Measured`` with the reason, which the rollout treats as a failed analysis (fail closed: rolled back, never
promoted).
"""

from __future__ import annotations

import logging
from typing import Protocol

from devmlops.errors import DevmlopsError
from devmlops.operator.rollout import Measured

__all__ = ["CanaryAnalysis", "MetricsSource", "drift_query", "queries"]

_log = logging.getLogger("devmlops.operator")
MIN_WINDOW_SECONDS = 5  # a rate needs two scrapes in its window; the guard is scraped every few seconds


class MetricsSource(Protocol):
    # Both raise DevmlopsError when Prometheus cannot answer.
    def value(self, query: str) -> float | None: ...
    def by_label(self, query: str, label: str) -> dict[str, float]: ...


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _version(namespace: str, name: str, digest: str) -> str:
    """The label matchers of one version's guards (namespace from the scrape, model and digest from the guard)."""
    return f'namespace="{_label(namespace)}",model="{_label(name)}",digest="{_label(digest)}"'


def queries(namespace: str, name: str, digest: str, window_seconds: int) -> dict[str, str]:
    """The PromQL for each figure, one instant query each."""
    where = _version(namespace, name, digest)
    window = f"[{max(window_seconds, MIN_WINDOW_SECONDS)}s]"

    def count(extra: str = "") -> str:
        return f"sum(increase(devmlops_guard_requests_total{{{where}{extra}}}{window}))"

    return {
        "requests": count(),
        "errors": count(',result="error"'),
        "blocked": count(',result="blocked"'),
        "p99": "histogram_quantile(0.99, sum by (le) "
        f"(rate(devmlops_guard_request_duration_seconds_bucket{{{where}}}{window})))",
        "drift": f"max(devmlops_guard_drift_psi{{{where}}})",
    }


def drift_query(namespace: str, name: str, digest: str) -> str:
    """Each feature's PSI now, the largest over the version's guards (one per replica)."""
    where = _version(namespace, name, digest)
    return f"max by (feature) (devmlops_guard_drift_psi{{{where}}})"


class CanaryAnalysis:
    """``source`` None: no Prometheus configured, so no step can pass (the setting is DEVMLOPS_PROMETHEUS_URL)."""

    def __init__(self, source: MetricsSource | None) -> None:
        self._source = source

    def measure(self, namespace: str, name: str, digest: str, window_seconds: int) -> Measured:
        if self._source is None:
            return Measured(error="no Prometheus is configured for the operator (DEVMLOPS_PROMETHEUS_URL)")
        asked = queries(namespace, name, digest, window_seconds)
        try:
            found = {figure: self._source.value(query) for figure, query in asked.items()}
        except DevmlopsError as exc:
            return Measured(error=exc.user_message)
        requests = found["requests"]
        if not requests:
            return Measured(requests=requests)

        def share(count: float | None) -> float:
            return (count or 0.0) / requests

        return Measured(
            requests=requests,
            error_rate=share(found["errors"]),
            blocked_rate=share(found["blocked"]),
            p99_seconds=found["p99"],
            drift_psi=found["drift"],
        )

    def drift(self, namespace: str, name: str, digest: str) -> dict[str, float] | None:
        """The serving version's PSI per feature (None: not measured; no Prometheus, or it could not answer)."""
        if self._source is None:
            return None
        try:
            return self._source.by_label(drift_query(namespace, name, digest), "feature")
        except DevmlopsError as exc:
            _log.warning("drift of %s/%s not read: %s", namespace, name, exc.user_message)
            return None
