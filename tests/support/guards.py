"""The serving guard as integration tests run it: a real `devmlops guard` process, its audit lines and metrics, and
the requests the tests send (tests/integration/conftest.py starts them)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from devmlops.harness.processes import ManagedProcess, free_port, http_ok

__all__ = ["DIGEST", "IRIS", "JSON", "Guard", "start_guard_process"]

IRIS = {
    "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}]
}
JSON = {"content-type": "application/json"}
DIGEST = "sha256:" + "ab" * 32  # the --digest every test guard serves under


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


def start_guard_process(folder: Path, upstream: str, config: dict[str, Any], *, model: str = "m") -> Guard:
    """A guard in front of ``upstream`` with ``config`` (the --config JSON), started and answering /healthz."""
    port, metrics = free_port(), free_port()
    argv = [sys.executable, "-m", "devmlops", "guard", f"--upstream={upstream}", f"--listen=127.0.0.1:{port}"]
    argv += [f"--metrics-listen=127.0.0.1:{metrics}", f"--model={model}", f"--digest={DIGEST}"]
    argv += ["--config=" + json.dumps(config)]
    process = ManagedProcess("guard", argv, log_path=folder / f"guard-{port}.log", env=dict(os.environ))
    process.start()
    guard = Guard(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics}")
    try:
        process.wait_until(
            lambda: http_ok(guard.metrics_url + "/healthz", timeout=1), timeout=30, what="the guard's /healthz"
        )
    except BaseException:
        process.stop()
        raise
    return guard
