"""A real MLflow tracking server on loopback for the registry tests and `make run`: sqlite backend store, local
artifact store.

The server runs from its own virtual environment (``mlflow`` with its server dependencies: Flask, SQLAlchemy,
pandas, ...), made once with pip from PyPI and cached outside the repository under ``~/.cache/devmlops``, keyed by
version; devmlops itself only needs the client (``mlflow-skinny`` of the same version, in the project's
environment). Job execution (a Huey consumer MLflow 3 starts beside the server) is switched off: the registry does
not use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from devmlops.harness.processes import ManagedProcess, free_port, http_ok
from devmlops.harness.toolcache import cache_root

__all__ = ["MLFLOW", "mlflow_process", "mlflow_server", "mlflow_venv", "wait_ready"]

MLFLOW = "mlflow==3.17.2"  # the server; the client is mlflow-skinny of the same version (pyproject.toml)


def mlflow_venv(log: Callable[[str], None] = lambda _m: None) -> Path:
    """``~/.cache/devmlops/mlflow-3.17.2`` (or under $DEVMLOPS_CACHE), made once with pip from PyPI."""
    venv = cache_root() / ("mlflow-" + MLFLOW.split("==")[1])
    if not (venv / ".complete").exists():
        log(f"installing {MLFLOW} (the registry server) into {venv} from PyPI, once (about 2 min)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", MLFLOW], check=True, timeout=1200)
        (venv / ".complete").write_text("ok\n")
    return venv


def mlflow_process(workdir: Path, log: Callable[[str], None] = lambda _m: None) -> tuple[ManagedProcess, str]:
    """A tracking server with a model registry on 127.0.0.1, started (not yet ready: ``wait_ready``); its URL."""
    venv = mlflow_venv(log)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("PYTHONPATH", None)  # its own environment, not the caller's
    process = ManagedProcess(
        "mlflow",
        [
            str(venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination", str(workdir / "artifacts"),
        ],
        log_path=workdir / "mlflow.log", env=env, cwd=workdir,
    )  # fmt: skip
    return process.start(), f"http://127.0.0.1:{port}"


def wait_ready(process: ManagedProcess, url: str) -> None:
    process.wait_until(lambda: http_ok(url + "/health"), timeout=120, what="MLflow server /health")


@contextmanager
def mlflow_server(workdir: Path) -> Iterator[str]:
    """A running tracking server with a model registry on 127.0.0.1; yields its URL."""
    process, url = mlflow_process(workdir)
    try:
        wait_ready(process, url)
        yield url
    finally:
        process.stop()
