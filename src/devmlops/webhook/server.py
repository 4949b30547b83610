"""Serve the webhook over TLS (1.2 or newer) with uvicorn; there is no plaintext port."""

from __future__ import annotations

import logging
import ssl

import uvicorn

from devmlops.errors import ConfigurationError
from devmlops.webhook.app import WebhookDeps, create_app
from devmlops.webhook.settings import WebhookSettings

__all__ = ["serve"]


def serve(settings: WebhookSettings, deps: WebhookDeps | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = uvicorn.Config(
        create_app(settings, deps),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert),
        ssl_keyfile=str(settings.tls_key),
        log_level="warning",
        access_log=False,
    )
    config.load()
    context: ssl.SSLContext | None = config.ssl
    if context is None:
        raise ConfigurationError("uvicorn built no TLS context; the webhook never serves plaintext")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    uvicorn.Server(config).run()
