"""The ``PolicyEngine`` port over a real OPA server, through ``opa-python-client``, with a deadline.

Every failure (connection refused, timeout, HTTP error, a package OPA does not know) raises
``PolicyEngineUnavailable``: the rego gate turns that into a denial, never into an admission.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import requests
from opa_client.opa import OpaClient

from devmlops.core.ports import PolicyEngineUnavailable, RegoVerdict
from devmlops.errors import ConfigurationError

__all__ = ["OpaEngine"]


def _messages(value: Any, package: str, rule: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyEngineUnavailable(f"data.{package}.{rule} must be a set of strings, got {type(value).__name__}")
    return tuple(sorted(value))


class OpaEngine:
    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigurationError(f"--opa-url: got {url!r}, expected http(s)://host:port")
        self.url = url
        self._client = OpaClient(
            host=parsed.hostname,
            port=parsed.port or (443 if parsed.scheme == "https" else 8181),
            ssl=parsed.scheme == "https",
            timeout=timeout,
            retries=0,  # a retry would spend the admission deadline; the API server retries the request
        )

    def evaluate(self, package: str, document: Mapping[str, Any]) -> RegoVerdict:
        try:
            answer = self._client.query_rule(input_data=dict(document), package_path=package)
        except requests.Timeout as exc:
            raise PolicyEngineUnavailable(f"OPA did not answer within the deadline ({self.url})") from exc
        except requests.RequestException as exc:
            raise PolicyEngineUnavailable(f"OPA query failed ({type(exc).__name__}: {exc})"[:300]) from exc
        except ValueError as exc:
            raise PolicyEngineUnavailable(f"OPA answered with something that is not JSON: {exc}") from exc
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict):
            raise PolicyEngineUnavailable(f"Rego package {package} is not loaded in OPA (data.{package} is undefined)")
        return RegoVerdict(
            deny=_messages(result.get("deny"), package, "deny"), warn=_messages(result.get("warn"), package, "warn")
        )

    def healthy(self) -> bool:
        try:
            response = requests.get(f"{self.url.rstrip('/')}/health", timeout=1.0)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def close(self) -> None:
        self._client.close_connection()
