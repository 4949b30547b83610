"""Serve the webhook over TLS (1.2 or newer) with uvicorn; there is no plaintext port.

A rotated certificate is picked up without a restart: a thread watches the files and loads the new chain into
the live ``SSLContext``, which new handshakes then use.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn
from cryptography import x509

from devmlops.errors import ConfigurationError
from devmlops.webhook.app import WebhookDeps, create_app
from devmlops.webhook.settings import WebhookSettings

__all__ = ["CertReloader", "serve"]

_log = logging.getLogger("devmlops.webhook.tls")


class CertReloader:
    """Reload ``cert``/``key`` into ``context`` whenever either file changes (checked every ``interval`` s)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        cert: Path,
        key: Path,
        *,
        interval: float,
        on_load: Callable[[bytes], None] = lambda _pem: None,
    ) -> None:
        self._context, self._cert, self._key, self._interval = context, cert, key, interval
        self._on_load = on_load
        self._stamp = self._current()
        self._stop = threading.Event()
        self.reloads = 0

    def _current(self) -> tuple[float, float, int, int]:
        cert, key = self._cert.stat(), self._key.stat()
        return (cert.st_mtime, key.st_mtime, cert.st_size, key.st_size)

    def check(self) -> bool:
        """Reload if the files changed; a half-written pair is retried on the next check.

        OpenSSL sets the certificate before it checks the key, so loading a mismatched pair straight into the live
        context would leave it serving a certificate without its key. The pair is therefore snapshotted, proven
        on a scratch context, and only then loaded into the live one from the same snapshot.
        """
        try:
            stamp = self._current()
            if stamp == self._stamp:
                return False
            with tempfile.TemporaryDirectory(prefix="devmlops-tls-") as tmp:
                cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                pem = self._cert.read_bytes()
                cert.write_bytes(pem)
                key.write_bytes(self._key.read_bytes())
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
                self._context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            _log.warning("TLS files changed but could not be loaded yet: %s", exc)
            return False
        self._stamp = stamp
        self.reloads += 1
        self._on_load(pem)
        _log.info("TLS certificate reloaded from %s", self._cert)
        return True

    async def run(self) -> None:
        """Check in the event loop's own thread: OpenSSL contexts must not change under a handshake in progress,
        and the server's handshakes run in this loop."""
        while not self._stop.is_set():
            await asyncio.sleep(self._interval)
            self.check()

    def stop(self) -> None:
        self._stop.set()


class _Server(uvicorn.Server):
    """uvicorn's server plus the certificate reloader running inside its event loop."""

    def __init__(self, config: uvicorn.Config, reloader: CertReloader) -> None:
        super().__init__(config)
        self._reloader = reloader
        self._reload_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._reload_task = asyncio.create_task(self._reloader.run())


def serve(settings: WebhookSettings, deps: WebhookDeps) -> None:
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

    def record_expiry(pem: bytes) -> None:
        try:
            expiry = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
        except ValueError:
            return
        deps.metrics.certificate_expiry.set(expiry)

    record_expiry(settings.tls_cert.read_bytes())
    reloader = CertReloader(
        context, settings.tls_cert, settings.tls_key, interval=settings.cert_reload_seconds, on_load=record_expiry
    )
    try:
        _Server(config, reloader).run()
    finally:
        reloader.stop()
