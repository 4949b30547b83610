"""One typed settings object for the operator process, and the kopf settings derived from it."""

from __future__ import annotations

import logging
from pathlib import Path

import kopf
from pydantic import BaseModel, ConfigDict, Field

from devmlops.core.decision import OPERATOR_FINALIZER
from devmlops.operator.certificates import CertificateSettings

__all__ = ["WORKER_LIMIT", "OperatorSettings", "kopf_settings"]

WORKER_LIMIT = 32  # kopf workers per watched kind; handlers run on a few threads anyway


class OperatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(default=(), description="Watch these namespaces; empty: cluster-wide.")
    standalone: bool = Field(default=True, description="Run without kopf peering (no peering CRDs needed).")
    peering_name: str = "devmlops"
    priority: int = 0
    liveness_endpoint: str | None = Field(default=None, description="e.g. http://0.0.0.0:8080/healthz")
    opa_url: str | None = Field(default=None, description="OPA for re-checking Rego policies.")
    recheck_seconds: float = Field(default=300.0, gt=0, description="Re-evaluate every ModelDeployment this often.")
    verification_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        description="Deadline of one signature or SBOM-signature verification (as the webhook's); past it the "
        "reconcile keeps the model server as it is and is retried.",
    )
    verifier_image: str = Field(
        default="devmlops:0.1.0",
        min_length=1,
        description="devmlops's own image as installed: the storage initializer and the guard the operator renders.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="The MLflow tracking server whose model registry spec.model.registry names."
    )
    registry_timeout_seconds: float = Field(default=2.0, gt=0, description="Deadline of one registry lookup.")
    registry_cache_seconds: float = Field(default=30.0, ge=0, description="How long a resolved entry is reused.")
    oci_plain_http: tuple[str, ...] = Field(default=(), description="OCI registries read over plain HTTP.")
    registry_auth_file: Path | None = Field(
        default=None,
        description="A Docker config JSON (.dockerconfigjson) of OCI registry credentials, by registry host; the "
        "cluster admin's, never a ModelDeployment's. None: anonymous reads.",
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="The Prometheus the canary rollout's analysis queries (the guards' metrics); none: no analysis "
        "can pass.",
    )
    retrain_webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="Where a retrain request (JSON) is POSTed when a served model's inputs drift; none: an Event only.",
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus /metrics port; 0: off.")
    metrics_address: str = "0.0.0.0"  # noqa: S104 - a pod listens on its own address
    certificates: CertificateSettings | None = Field(default=None, description="Keep the webhook's TLS (or not).")


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = OPERATOR_FINALIZER
    # kopf's bookkeeping goes to status (a subresource the webhook does not see), not to annotations: an annotation
    # patch is an UPDATE of the ModelDeployment, which the webhook decides in full, and is refused once a policy no
    # longer admits the model (kopf then retried each refused patch for 11 s inside a worker).
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # After an API server restart, watches resumed at the old resourceVersion get 429 "storage is (re)initializing"
    # for a long while and kopf starts a fresh list + watch only once its retries run out: keep those short
    # (handlers retry on their own, every 5 s, see handlers.py).
    settings.networking.error_backoffs = [1, 2, 3, 5]
    # kopf runs one worker per object changed at once, and a burst of 1,000 creates left the operator's memory at
    # 166 MiB (the allocator keeps its high-water mark). Capped, with workers that leave as soon as their object is
    # quiet. Handlers never sleep in kopf's retry backoff (that would hold a slot and starve other objects): a failed
    # reconcile is parked and retried by the background loop (retries.py).
    settings.queueing.worker_limit = WORKER_LIMIT
    settings.queueing.idle_timeout = 0.5
    return settings
