"""One number from Prometheus: an instant query over its HTTP API (``/api/v1/query``), for the rollout analysis
that gates a canary's promotion on the guard's metrics (error rate, latency, drift, blocks).

The analysis compares numbers with thresholds, so a query has three outcomes only: a float, ``None`` (no data: an
empty vector, or NaN such as 0/0 of a ratio over no requests), or ``MetricsUnavailableError``. Everything else fails
closed as that error, whose message names the Prometheus URL and the query: Prometheus unreachable or past the
deadline, an HTTP error, ``status: error`` (with Prometheus's ``errorType`` and text), an answer that is not the
API's JSON, a range vector or string, a native histogram sample, and a vector of several samples (a query meant to
be one number that matches several series is a mistake in the query, not something to pick from).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlparse

import httpx

from devmlops.errors import ConfigurationError, MetricsUnavailableError

__all__ = ["PrometheusQuery"]

_MAX_TEXT = 300  # of an error text quoted from Prometheus


class PrometheusQuery:
    """Instant queries against one Prometheus server, each bounded by ``timeout_seconds`` (connect and read; the
    same deadline is passed to Prometheus as the query's evaluation timeout)."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigurationError(f"Prometheus URL: got {url!r}, expected http(s)://host[:port][/path]")
        if not timeout_seconds > 0:
            raise ConfigurationError(f"Prometheus query timeout: got {timeout_seconds!r}, expected seconds > 0")
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    def value(self, query: str) -> float | None:
        """The query's one number at this instant; ``None`` when there is no data."""
        body = self._answer(query)
        data = body.get("data")
        result_type = data.get("resultType") if isinstance(data, dict) else None
        result = data.get("result") if isinstance(data, dict) else None
        if result_type == "scalar":
            return self._number(query, result)
        if result_type == "vector" and isinstance(result, list):
            if not result:
                return None
            if len(result) > 1:
                raise self._error(query, f"{len(result)} samples, expected one (aggregate the query, e.g. sum(...))")
            sample = result[0]
            return self._number(query, sample.get("value") if isinstance(sample, dict) else None)
        raise self._error(query, f"a result of type {result_type!r}, expected a scalar or an instant vector")

    def by_label(self, query: str, label: str) -> dict[str, float]:
        """An instant vector as ``{value of label: number}`` (NaN samples left out); a sample without the label, or two
        with the same value, is an error (aggregate the query ``by (label)``)."""
        body = self._answer(query)
        data = body.get("data")
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(result, list):
            raise self._error(query, f"a result of type {data.get('resultType') if isinstance(data, dict) else None!r}"
                              ", expected an instant vector")  # fmt: skip
        found: dict[str, float] = {}
        for sample in result:
            metric = sample.get("metric") if isinstance(sample, dict) else None
            key = metric.get(label) if isinstance(metric, dict) else None
            if not isinstance(key, str) or key in found:
                raise self._error(query, f"a sample {'without' if not isinstance(key, str) else 'repeating'} label "
                                  f"{label!r} ({metric!r:.80}), expected one sample per value of it")  # fmt: skip
            number = self._number(query, sample.get("value"))
            if number is not None:
                found[key] = number
        return found

    def _answer(self, query: str) -> dict[str, Any]:
        params = {"query": query, "timeout": f"{max(1, round(self.timeout_seconds * 1000))}ms"}
        try:
            response = httpx.get(
                f"{self.url}/api/v1/query", params=params, timeout=self.timeout_seconds, follow_redirects=False
            )
        except httpx.TimeoutException as exc:
            raise self._error(query, f"no answer within {self.timeout_seconds}s") from exc
        except httpx.HTTPError as exc:
            raise self._error(query, f"{type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            # Prometheus answers a bad query with 400 and an execution failure with 422 or 503, all with this body.
            kind, text = body.get("errorType"), str(body.get("error"))[:_MAX_TEXT]
            raise self._error(query, f"status error, errorType {kind!r}: {text}", status=response.status_code)
        if response.status_code != 200:
            raise self._error(query, f"HTTP {response.status_code}", status=response.status_code)
        if not isinstance(body, dict) or body.get("status") != "success":
            raise self._error(query, "an answer that is not the query API's JSON (status 'success' expected)")
        return body

    def _number(self, query: str, pair: Any) -> float | None:
        """``[timestamp, "1.5"]`` -> 1.5; ``"NaN"`` -> None (Prometheus writes sample values as strings)."""
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            raise self._error(query, f'a sample value {pair!r:.80}, expected [timestamp, "number"]')
        try:
            number = float(pair[1])
        except ValueError as exc:
            raise self._error(query, f"a sample value {pair[1]!r:.40} that is not a number") from exc
        return None if math.isnan(number) else number

    def _error(self, query: str, found: str, *, status: int | None = None) -> MetricsUnavailableError:
        context: dict[str, Any] = {"prometheus": self.url, "query": query}
        if status is not None:
            context["status"] = status
        return MetricsUnavailableError(f"Prometheus {self.url}, query {query!r}: got {found}", context=context)
