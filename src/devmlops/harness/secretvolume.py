"""The kubelet's part for a Secret volume, on a control plane without kubelets: mirror a Secret into a folder.

The layout and the swap are the kubelet's (AtomicWriter): the files live in a timestamped folder, ``..data`` is a
symlink to it, each key is a symlink through ``..data``, and an update writes a new folder and renames a new
``..data`` link over the old one, so a reader sees the old set or the new set, never half of each.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Self

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client
from devmlops.errors import HarnessError
from devmlops.harness.processes import Lifecycle

__all__ = ["SecretVolume"]

_log = logging.getLogger("devmlops.harness.secretvolume")


class SecretVolume(Lifecycle):
    def __init__(self, kubeconfig: Path, namespace: str, name: str, target: Path, *, interval: float = 0.2) -> None:
        self._kubeconfig, self._namespace, self._name = kubeconfig, namespace, name
        self.target = target
        self._interval = interval
        self._version = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"secret-volume-{name}", daemon=True)
        self.updates = 0

    def path(self, key: str) -> Path:
        return self.target / key

    def start(self, *, timeout: float = 30.0) -> Self:
        """Wait for the Secret's first version (like a pod stuck in ContainerCreating), then follow it."""
        self.target.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while not self._sync():
            if time.monotonic() > deadline:
                raise HarnessError(f"Secret {self._namespace}/{self._name} did not appear within {timeout:.0f}s")
            time.sleep(self._interval)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sync()
            except Exception as exc:  # the API server may be restarting: keep the files, try again
                _log.debug("Secret %s/%s not read (%s); keeping the files", self._namespace, self._name, exc)

    def _sync(self) -> bool:
        with api_client(self._kubeconfig) as client:
            try:
                secret: Any = k8s.CoreV1Api(client).read_namespaced_secret(self._name, self._namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
        if secret.metadata.resource_version == self._version:
            return True
        self._write({key: base64.b64decode(value) for key, value in (secret.data or {}).items()})
        self._version = secret.metadata.resource_version
        self.updates += 1
        return True

    def _write(self, files: dict[str, bytes]) -> None:
        stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
        folder = self.target / stamp
        folder.mkdir()
        for key, value in files.items():
            (folder / key).write_bytes(value)
            (folder / key).chmod(0o600)
        data, staged = self.target / "..data", self.target / "..data_tmp"
        old = os.readlink(data) if data.is_symlink() else None
        staged.unlink(missing_ok=True)
        staged.symlink_to(stamp)
        staged.replace(data)
        for key in files:
            link = self.target / key
            if not link.is_symlink():
                link.symlink_to(Path("..data") / key)
        if old is not None:
            shutil.rmtree(self.target / old, ignore_errors=True)
