"""One typed settings object for the operator process, and the kopf settings derived from it."""

from __future__ import annotations

import logging

import kopf
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OperatorSettings", "kopf_settings"]


class OperatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(default=(), description="Watch these namespaces; empty: cluster-wide.")
    standalone: bool = Field(default=True, description="Run without kopf peering (no peering CRDs needed).")
    peering_name: str = "devmlops"
    priority: int = 0
    liveness_endpoint: str | None = Field(default=None, description="e.g. http://0.0.0.0:8080/healthz")


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = "devmlops.io/operator"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    return settings
