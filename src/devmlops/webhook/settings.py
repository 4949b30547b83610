"""One typed settings object for the webhook process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from devmlops.core.evidence import DEFAULT_SERVER_IMAGES, Identities

__all__ = ["WebhookSettings"]


class WebhookSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    tls_cert: Path
    tls_key: Path
    decision_timeout_seconds: float = Field(
        default=8.0,
        gt=0,
        description="Deny (fail closed) when no decision is ready by then; keep it below the "
        "webhook configuration's timeoutSeconds.",
    )
    verification_timeout_seconds: float = Field(default=3.0, gt=0, description="Deadline of one verification.")
    decision_workers: int = Field(default=8, ge=1)
    workers: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Worker processes on one port (SO_REUSEPORT), each with its own caches built from the API server.",
    )
    max_pending_decisions: int = Field(
        default=64,
        ge=1,
        description="Reviews waiting for or in a decision at once; beyond it a review is denied at once (overloaded, "
        "fail closed) instead of queueing towards the API server's timeout.",
    )
    no_match: Literal["allow", "warn", "deny"] = "deny"
    opa_url: str | None = Field(default=None, description="OPA for the rego gate, e.g. http://127.0.0.1:8181.")
    opa_timeout_seconds: float = Field(default=2.0, gt=0, description="Deadline of one OPA query.")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="The MLflow tracking server whose model registry spec.model.registry names."
    )
    registry_timeout_seconds: float = Field(default=2.0, gt=0, description="Deadline of one registry lookup.")
    registry_cache_seconds: float = Field(
        default=30.0, ge=0, description="How long a resolved registry entry is reused (an alias move shows after it)."
    )
    oci_plain_http: tuple[str, ...] = Field(
        default=(), description="OCI registries read over plain HTTP for image signatures (others over HTTPS)."
    )
    registry_auth_file: Path | None = Field(
        default=None,
        description="A Docker config JSON (.dockerconfigjson) of OCI registry credentials, by registry host; the "
        "cluster admin's, never a ModelDeployment's. None: anonymous reads.",
    )
    cert_reload_seconds: float = Field(default=10.0, gt=0, description="How often the TLS files are checked.")
    max_body_bytes: int = Field(
        default=3 * 1024 * 1024, ge=1024, description="Larger AdmissionReviews are denied unread (413)."
    )
    model_server_images: tuple[str, ...] = Field(
        default=DEFAULT_SERVER_IMAGES,
        min_length=1,
        description="Image substrings that make a Deployment or StatefulSet a model server (as in matchConditions).",
    )
    operator_user: str = Field(default=Identities().operator, min_length=1)
    kserve_user: str = Field(default=Identities().kserve, min_length=1)
    controller_users: tuple[str, ...] = Field(default=Identities().controllers, min_length=1)
    endpoint_slice_users: tuple[str, ...] = Field(
        default=Identities().endpoint_slices,
        min_length=1,
        description="The EndpointSlice controller's identities (as in the webhook configuration's matchConditions).",
    )
    verifier_image: str = Field(default="devmlops:0.1.0", min_length=1)
    evidence_secret_namespaces: tuple[str, ...] | None = Field(
        default=None,
        description="Namespaces whose labelled Secrets are evidence; None: every namespace; empty: Secrets are off.",
    )
    evidence_configmap_namespaces: tuple[str, ...] | None = Field(
        default=None,
        description="Namespaces whose labelled ConfigMaps are evidence; None: every namespace (cluster-wide read).",
    )

    @property
    def identities(self) -> Identities:
        return Identities(
            operator=self.operator_user,
            kserve=self.kserve_user,
            controllers=self.controller_users,
            endpoint_slices=self.endpoint_slice_users,
        )
