"""The serving guard as the tests run it: a real `devmlops guard` process on loopback in front of an upstream, with
its audit lines (its log) and its /metrics at hand. Shared by the guard's own tests and the Prometheus tests."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from devmlops.harness.processes import ManagedProcess, free_port, http_ok

DIGEST = "sha256:" + "ab" * 32


class Guard:
    def __init__(self, process: ManagedProcess, url: str, metrics_url: str) -> None:
        self.process, self.url, self.metrics_url = process, url, metrics_url

    @property
    def metrics_address(self) -> str:
        """``host:port`` of /metrics, as a scrape target."""
        return self.metrics_url.removeprefix("http://")

    def audit(self) -> list[dict[str, Any]]:
        lines = [line for line in self.process.log_text().splitlines() if line.startswith("{")]
        return [json.loads(line) for line in lines]

    def metric(self, result: str, reason: str) -> float:
        text = httpx.get(self.metrics_url + "/metrics", timeout=5).text
        for line in text.splitlines():
            labels = (f'result="{result}"', f'reason="{reason}"')
            if line.startswith("devmlops_guard_requests_total{") and all(label in line for label in labels):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextmanager
def guards(workdir: Path) -> Iterator[Callable[..., Guard]]:
    """``start(upstream, config, model=..., digest=...)`` starts a ready guard; every one started stops at the end."""
    started: list[ManagedProcess] = []

    def start(upstream: str, config: dict[str, Any], *, model: str = "m", digest: str = DIGEST) -> Guard:
        port, metrics = free_port(), free_port()
        argv = [sys.executable, "-m", "devmlops", "guard", f"--upstream={upstream}", f"--listen=127.0.0.1:{port}"]
        argv += [f"--metrics-listen=127.0.0.1:{metrics}", f"--model={model}", f"--digest={digest}"]
        argv += ["--config=" + json.dumps(config)]
        process = ManagedProcess("guard", argv, log_path=workdir / f"guard-{port}.log", env=dict(os.environ))
        started.append(process.start())
        guard = Guard(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics}")
        process.wait_until(
            lambda: http_ok(guard.metrics_url + "/healthz", timeout=1), timeout=30, what="the guard's /healthz"
        )
        return guard

    try:
        yield start
    finally:
        for process in started:
            process.stop()
