"""The cache outside the repository (``~/.cache/devmlops``) where the harness keeps what it builds or installs once,
keyed by version: virtual environments (MLflow, MLServer) and tools built from the Go module proxy with
``go install module@version`` (the OCI registry and cosign in harness/oci.py, Prometheus in harness/prometheus.py).
The control-plane tools have their own script (hack/tools.sh).

A build goes to a temporary folder beside its destination and is renamed into place, so an interrupted or
concurrent build never leaves a half-written binary where the next run would take it for a finished one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["cache_root", "go_install"]


def cache_root() -> Path:
    """``~/.cache/devmlops``, or ``$DEVMLOPS_CACHE``."""
    return Path(os.environ.get("DEVMLOPS_CACHE", Path.home() / ".cache" / "devmlops"))


def go_install(
    module: str, destination: Path, *, log: Callable[[str], None] = lambda _m: None, minutes: str = "3"
) -> Path:
    """``destination`` (a binary's path), built with ``go install module@version`` when it is missing."""
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    log(f"building {module} into {destination.parent} with go install, once (about {minutes} min)")
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=destination.parent))
    try:
        env = {**os.environ, "GOBIN": str(staging)}
        subprocess.run(["go", "install", module], check=True, env=env, timeout=1800)
        # go install names the binary after the last element of the package path, e.g. cmd/prometheus.
        os.replace(staging / module.split("@")[0].rsplit("/", 1)[1], destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination
