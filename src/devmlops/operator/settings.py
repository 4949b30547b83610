"""One typed settings object for the operator process, and the kopf settings derived from it."""

from __future__ import annotations

import logging

import kopf
from pydantic import BaseModel, ConfigDict, Field

from devmlops.operator.certificates import CertificateSettings

__all__ = ["OperatorSettings", "kopf_settings"]


class OperatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(default=(), description="Watch these namespaces; empty: cluster-wide.")
    standalone: bool = Field(default=True, description="Run without kopf peering (no peering CRDs needed).")
    peering_name: str = "devmlops"
    priority: int = 0
    liveness_endpoint: str | None = Field(default=None, description="e.g. http://0.0.0.0:8080/healthz")
    opa_url: str | None = Field(default=None, description="OPA for re-checking Rego policies.")
    recheck_seconds: float = Field(default=300.0, gt=0, description="Re-evaluate every ModelDeployment this often.")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus /metrics port; 0: off.")
    metrics_address: str = "0.0.0.0"  # noqa: S104 - a pod listens on its own address
    certificates: CertificateSettings | None = Field(default=None, description="Keep the webhook's TLS (or not).")


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = "devmlops.io/operator"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # After an API server restart, watches resumed at the old resourceVersion get 429 "storage is (re)initializing"
    # for a long while and kopf starts a fresh list + watch only once its retries run out: keep those short
    # (handlers retry on their own, every 5 s, see handlers.py).
    settings.networking.error_backoffs = [1, 2, 3, 5]
    # kopf runs one worker per object changed at once. Capping them (queueing.worker_limit = 32) kept the operator at
    # 137 MiB through a burst of 1,000 creates, but a handler sleeping in its retry backoff holds its slot, and a few
    # dozen failing objects then starved every other one (a new ModelDeployment waited over 30 s): no cap.
    return settings
