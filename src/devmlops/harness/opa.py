"""A real OPA server for ``make run`` and the tests: ``opa run --server --bundle --watch`` with ``policies/`` as the
bundle root, so an edited Rego file changes decisions without restarting OPA or the webhook."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from devmlops.harness.processes import Lifecycle, ManagedProcess, free_port

__all__ = ["OpaServer"]


class OpaServer(Lifecycle):
    def __init__(self, *, bin_dir: Path, policies: Path, workdir: Path) -> None:
        self.bin_dir, self.policies, self.workdir = bin_dir, policies, workdir
        self.port = 0
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, port: int | None = None) -> Self:
        self.port = port or free_port()
        argv = [
            str(self.bin_dir / "opa"),
            "run",
            "--server",
            "--bundle",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--watch",
            "--skip-version-check",
            "--log-level",
            "error",
            "--ignore",
            "samples",
            "--ignore",
            "*_test.rego",
            str(self.policies),
        ]
        self.process = ManagedProcess("opa", argv, log_path=self.workdir / "opa.log").start()
        self.process.wait_until(self.healthy, timeout=30, what="OPA /health")
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:  # noqa: S310 - our loopback URL
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
