"""Serve the webhook over TLS (1.2 or newer) with uvicorn; there is no plaintext port.

A rotated certificate is picked up without a restart: a thread watches the files and loads the new chain into
the live ``SSLContext``, which new handshakes then use.

With ``workers`` > 1 the process serves as worker 0 and starts the others; each binds the same port with
SO_REUSEPORT (the kernel spreads connections over them) and builds its own caches, policies and verification cache
from the API server: the workers share nothing but those inputs. Metrics are aggregated across workers through
prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509

from devmlops.errors import ConfigurationError
from devmlops.webhook.app import WebhookDeps, create_app
from devmlops.webhook.settings import WebhookSettings

__all__ = ["CertReloader", "listen", "serve", "serve_workers", "server_options"]

# The server stack, chosen on measurement (docs/benchmarks.md): uvloop's event loop and httptools' HTTP parser, both
# C, serve a fixed answer over TLS at about twice the rate of uvicorn's pure-Python asyncio + h11 on one core.
LOOP = "uvloop"
HTTP = "httptools"
_READY_WAIT_SECONDS = 120.0  # as long as the chart's startupProbe allows
_REFREEZE_SECONDS = 60.0
_RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)

_log = logging.getLogger("devmlops.webhook.tls")
_workers_log = logging.getLogger("devmlops.webhook")


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
        # What the first reviews import lazily (the SBOM schemas, the verifiers) lives as long as the process too.
        asyncio.get_running_loop().call_later(_REFREEZE_SECONDS, gc.freeze)


API_SERVER_IDLE_SECONDS = 90  # client-go's IdleConnTimeout: how long the API server keeps an idle connection
KEEP_ALIVE_SECONDS = API_SERVER_IDLE_SECONDS + 30


def server_options() -> dict[str, Any]:
    """uvicorn options of the webhook; the benchmark's ceiling apps use them too, so both run on the same stack.
    No proxy headers (nothing sits in front of the webhook but the API server) and no Server header."""
    return {
        "loop": LOOP,
        "http": HTTP,
        "proxy_headers": False,
        "server_header": False,
        "log_level": "warning",
        "access_log": False,
        # The API server keeps an idle connection to a webhook for 90 s (client-go's transport) and does not retry a
        # POST that meets a connection the server has just closed: with uvicorn's 5 s the webhook closed idle
        # connections first, so a review sent on one in the same instant failed "EOF" (a denial; the likely cause
        # of one seen in `make test`). The client closes first now.
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }


def listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound TCP socket; with ``reuse_port`` several processes bind the same port and the kernel spreads new
    connections over them (SO_REUSEPORT binds only sockets of the same user to one port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for sockets that say TCP (without
    # it, a response waits for the client's delayed ACK, 40 ms); uvloop sets it either way.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


def serve(settings: WebhookSettings, deps: WebhookDeps, *, sock: socket.socket | None = None) -> None:
    """Serve one process's app; on ``sock`` when given (a worker), else on settings.host:port."""
    config = uvicorn.Config(
        create_app(settings, deps),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert),
        ssl_keyfile=str(settings.tls_key),
        **server_options(),
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
    # Everything built so far lives as long as the process: keep the cyclic GC from scanning it again and again
    # (a full collection over the imported modules took 150-200 ms, a pause every few seconds under load).
    gc.collect()
    gc.freeze()
    reloader = CertReloader(
        context, settings.tls_cert, settings.tls_key, interval=settings.cert_reload_seconds, on_load=record_expiry
    )
    try:
        _Server(config, reloader).run(sockets=[sock] if sock is not None else None)
    finally:
        reloader.stop()


def serve_workers(settings: WebhookSettings, factory: Callable[[], WebhookDeps]) -> None:
    """Serve with ``settings.workers`` processes. ``factory`` builds one worker's dependencies (caches, policies,
    verifiers); it runs in every worker, so it must be picklable (a module-level function or a partial of one).

    One worker binds at once and reports readiness on /readyz, as before. With several, a worker binds only once
    its own ``ready()`` holds (or after two minutes): otherwise the kernel would hand connections to a worker whose
    caches are still empty beside workers that are ready."""
    if settings.workers == 1:
        serve(settings, factory())
        return
    metrics_dir = _multiprocess_metrics()
    children = _Workers(settings, factory, metrics_dir)
    children.start()
    try:
        _serve_worker(settings, factory, metrics_dir)
    finally:
        children.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _multiprocess_metrics() -> str:
    """Counters and histograms of all workers, summed on every worker's /metrics (prometheus_client multiprocess
    mode: each process writes its values to files in one directory)."""
    directory = tempfile.mkdtemp(prefix="devmlops-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # inherited by the spawned workers before they import
    from prometheus_client import values

    # This process imported prometheus_client before the directory existed; its metrics are made after this line.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def _serve_worker(settings: WebhookSettings, factory: Callable[[], WebhookDeps], metrics_dir: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    deps = dataclasses.replace(factory(), exposition=lambda: generate_latest(registry))
    deadline = time.monotonic() + _READY_WAIT_SECONDS
    while not deps.ready() and time.monotonic() < deadline:
        time.sleep(0.2)
    serve(settings, deps, sock=listen(settings.host, settings.port, reuse_port=True))


def _worker_main(settings: WebhookSettings, factory: Callable[[], WebhookDeps], metrics_dir: str, parent: int) -> None:
    """A spawned worker: stops when worker 0 goes, however it goes (SIGTERM from the kernel on its death)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        return
    _serve_worker(settings, factory, metrics_dir)


class _Workers:
    """Workers 1..N-1, restarted (after a growing delay) when one exits while worker 0 serves."""

    def __init__(self, settings: WebhookSettings, factory: Callable[[], WebhookDeps], metrics_dir: str) -> None:
        self._settings, self._factory, self._metrics_dir = settings, factory, metrics_dir
        self._context = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._restarts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="webhook-workers", daemon=True)

    def _spawn(self, index: int) -> Any:
        process = self._context.Process(
            target=_worker_main,
            args=(self._settings, self._factory, self._metrics_dir, os.getpid()),
            name=f"devmlops-webhook-{index}",
            daemon=True,
        )
        process.start()
        return process

    def start(self) -> None:
        self._procs = [self._spawn(index) for index in range(1, self._settings.workers)]
        self._restarts = [0] * len(self._procs)
        self._thread.start()

    def _watch(self) -> None:
        from prometheus_client import multiprocess

        while not self._stop.wait(0.5):
            for slot, process in enumerate(self._procs):
                if process.is_alive():
                    continue
                delay = _RESTART_DELAYS[min(self._restarts[slot], len(_RESTART_DELAYS) - 1)]
                _workers_log.error(
                    "webhook worker %d (pid %s) exited with code %s; starting it again in %gs",
                    slot + 1,
                    process.pid,
                    process.exitcode,
                    delay,
                )
                if process.pid is not None:
                    multiprocess.mark_process_dead(process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
                    Path(self._metrics_dir, f"gauge_all_{process.pid}.db").unlink(missing_ok=True)
                if self._stop.wait(delay):
                    return
                self._restarts[slot] += 1
                self._procs[slot] = self._spawn(slot + 1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for process in self._procs:
            if process.is_alive():
                process.terminate()
        for process in self._procs:
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join(5)
