"""Resolve ``spec.model.registry.mlflow`` with MLflow's client library: an alias or a version number to the
version's number, storage location, aliases and tags (the signature, ML-BOM and digest devmlops stores there, see
``core/gates/registry.py``).

Only the cluster admins choose the tracking server (``--mlflow-tracking-uri``): a ModelDeployment names a model and
a version or alias, never a server, so a namespace editor cannot point devmlops at a registry of their own.

MLflow's client retries a failed request up to seven times with backoff and waits up to 120 s for an answer; at
admission that would hold a decision far past the webhook's timeout. This adapter sets
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT`` for its process unless they are set already,
and ``registrycache.DeadlineRegistry`` bounds each lookup in any case.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from typing import Any

from devmlops.core.evidence import RegistryVersion
from devmlops.core.gates.registry import requested
from devmlops.core.manifests import MlflowRef

__all__ = ["MlflowRegistry", "mlflow_client"]

log = logging.getLogger(__name__)
_INDIRECT = ("models:/", "runs:/")  # sources MLflow resolves to a storage location itself


def mlflow_client(tracking_uri: str, *, request_timeout: float) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (tracking and registry on the same server) that gives up quickly."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(request_timeout))))
    from mlflow import MlflowClient  # imported here: a process without a registry never loads MLflow

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class MlflowRegistry:
    """One MLflow tracking server's model registry. ``resolve`` never raises for a lookup that fails: the result
    carries the reason (fail closed in the registry gate)."""

    def __init__(self, tracking_uri: str, *, request_timeout: float = 2.0) -> None:
        self.label = f"MLflow {tracking_uri}"
        self._client = mlflow_client(tracking_uri, request_timeout=request_timeout)

    def resolve(self, ref: MlflowRef) -> RegistryVersion:
        base = RegistryVersion(registry=self.label, name=ref.name, requested=requested(ref))
        try:
            if ref.alias is not None:
                found = self._client.get_model_version_by_alias(ref.name, ref.alias)
            else:
                found = self._client.get_model_version(ref.name, ref.version)
            source = str(found.source or "")
            if source.startswith(_INDIRECT):
                source = str(self._client.get_model_version_download_uri(ref.name, found.version))
        except Exception as exc:  # any failure of the lookup is a denial naming it, never a pass
            return replace(base, error=_failure(exc))
        version = replace(
            base,
            version=str(found.version),
            source=source,
            aliases=tuple(str(a) for a in (found.aliases or ())),
            tags={str(k): str(v) for k, v in (found.tags or {}).items()},
        )
        status = str(found.status or "")
        if status != "READY":
            return replace(version, error=f"version {found.version} is {status or 'of no status'}, expected READY")
        return version


def _failure(exc: Exception) -> str:
    """What went wrong, in the registry's words where it gave any (RESOURCE_DOES_NOT_EXIST: ...)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        message = exc.message if len(exc.message) <= 300 else exc.message[:297] + "..."
        return f"lookup failed: {message}"
    log.warning("MLflow registry lookup failed", exc_info=exc)
    return f"lookup failed: registry unreachable or answered unexpectedly ({type(exc).__name__})"
