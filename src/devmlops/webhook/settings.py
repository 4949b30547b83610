"""One typed settings object for the webhook process."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WebhookSettings"]


class WebhookSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    tls_cert: Path
    tls_key: Path
    max_body_bytes: int = Field(
        default=3 * 1024 * 1024, ge=1024, description="Larger AdmissionReviews are denied unread (413)."
    )
