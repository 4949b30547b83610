"""A kubelet's part for Pods whose model server cannot run on this machine (no Triton image can be built here).

The real API server, the real controllers (Deployment, ReplicaSet), the webhook and the operator do everything they
do in a cluster; this stands in only for what a node would do: a Node object whose lease is renewed, Pods bound to it
and reported Running and Ready, and each Pod's guard container run for real (``devmlops guard`` with the arguments
the Pod's template carries) on loopback, in front of a loopback model server. The one translation is the address
a cluster would resolve: the canary Service's name becomes the canary guard's loopback port.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.core.render import GUARD_CONTAINER
from devmlops.harness.processes import ManagedProcess, free_port, http_ok

__all__ = ["GuardPods", "StandInNode"]

_TICK = 0.5


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StandInNode:
    """A Ready Node (lease renewed) to which the Pods of ``namespace`` are bound and reported Ready, every tick."""

    def __init__(self, client: k8s.ApiClient, namespace: str, name: str = "stand-in-node") -> None:
        self._core = k8s.CoreV1Api(client)
        self._leases = k8s.CoordinationV1Api(client)
        self.namespace, self.name = namespace, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stand-in-node", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> StandInNode:
        self._core.create_node({"metadata": {"name": self.name, "labels": {"devmlops.io/stand-in": "true"}}})
        self._heartbeat()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for delete in (
            lambda: self._leases.delete_namespaced_lease(self.name, "kube-node-lease"),
            lambda: self._core.delete_node(self.name),
        ):
            try:
                delete()
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def _heartbeat(self) -> None:
        now = _now()
        ready = {"type": "Ready", "status": "True", "reason": "StandIn", "lastHeartbeatTime": now,
                 "lastTransitionTime": now}  # fmt: skip
        self._core.patch_node_status(self.name, {"status": {"conditions": [ready]}})
        lease = {
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                     "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        }  # fmt: skip
        try:
            self._leases.replace_namespaced_lease(self.name, "kube-node-lease", lease)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._leases.create_namespaced_lease("kube-node-lease", lease)

    def _run(self) -> None:
        beats = 0
        while not self._stop.wait(_TICK):
            try:
                beats += 1
                if beats % 10 == 0:
                    self._heartbeat()
                self._report_pods()
            except ApiException as exc:  # a conflict with a controller's write: the next tick tries again
                self.errors.append(f"{exc.status} {exc.reason}")

    def _report_pods(self) -> None:
        for pod in self._core.list_namespaced_pod(self.namespace).items:
            if pod.metadata.deletion_timestamp is not None:
                self._core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
                continue
            if not pod.spec.node_name:
                binding = {"target": {"kind": "Node", "name": self.name}, "metadata": {"name": pod.metadata.name}}
                self._core.create_namespaced_pod_binding(pod.metadata.name, self.namespace, binding,
                                                         _preload_content=False)  # fmt: skip
            elif pod.spec.node_name != self.name:
                raise AssertionError(f"Pod {pod.metadata.name} was bound to {pod.spec.node_name}, not the stand-in")
            if pod.status.phase != "Running":
                now = _now()
                conditions = [
                    {"type": kind, "status": "True", "lastTransitionTime": now}
                    for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ]
                containers = [
                    {"name": c.name, "image": c.image, "imageID": c.image, "ready": True, "restartCount": 0,
                     "started": True, "state": {"running": {"startedAt": now}}}
                    for c in pod.spec.containers
                ]  # fmt: skip
                status = {"phase": "Running", "conditions": conditions, "containerStatuses": containers,
                          "startTime": now, "podIP": "127.0.0.1"}  # fmt: skip
                self._core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, {"status": status})


def _guard_args(deployment: Mapping[str, Any]) -> list[str] | None:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    guard = next((c for c in containers if c["name"] == GUARD_CONTAINER), None)
    return list(guard["args"]) if guard else None


class GuardPods:
    """The guard container of each named Deployment run for real, restarted when its template's arguments change
    (as a rollout of the Deployment would); ``upstreams`` maps a Deployment to its model server's URL and
    ``targets_changed`` gets every guard's metrics address when one starts or stops (Prometheus's targets)."""

    def __init__(
        self,
        client: k8s.ApiClient,
        namespace: str,
        upstreams: Mapping[str, str],
        workdir: Path,
        targets_changed: Callable[[list[str]], None],
    ) -> None:
        self._apps = k8s.AppsV1Api(client)
        self.namespace, self.upstreams, self.workdir = namespace, dict(upstreams), workdir
        self._targets_changed = targets_changed
        self.running: dict[str, tuple[list[str], ManagedProcess, str, str]] = {}  # name: args, process, url, metrics
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="guard-pods", daemon=True)
        self.starts = 0

    def __enter__(self) -> GuardPods:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for _args, process, _url, _metrics in self.running.values():
            process.stop()

    def splits(self, deployment: str) -> bool:
        """Whether the running guard of ``deployment`` forwards a share (its template's configuration has a split)."""
        with self._lock:
            entry = self.running.get(deployment)
        return entry is not None and any(a.startswith("--config=") and '"split"' in a for a in entry[0])

    def url(self, deployment: str) -> str | None:
        with self._lock:
            entry = self.running.get(deployment)
            return entry[2] if entry else None

    def _run(self) -> None:
        while not self._stop.wait(_TICK):
            try:
                self.sync()
            except ApiException:
                continue

    def sync(self) -> None:
        stored = {d.metadata.name: d for d in self._apps.list_namespaced_deployment(self.namespace).items}
        changed = False
        for name in list(self.running):
            if name not in stored:
                with self._lock:
                    gone = self.running.pop(name)
                gone[1].stop()
                changed = True
        for name in sorted(self.upstreams, key=lambda n: not n.endswith("-canary")):  # a split needs its canary
            deployment = stored.get(name)
            if deployment is None:
                continue
            args = _guard_args(k8s.ApiClient().sanitize_for_serialization(deployment))
            current = self.running.get(name)
            if args is None or (current is not None and current[0] == args):
                continue
            if current is not None:
                current[1].stop()
            started = self._start(name, args)
            with self._lock:
                self.running[name] = (args, *started)
            changed = True
        if changed:
            self._targets_changed([entry[3] for entry in self.running.values()])

    def _start(self, name: str, args: list[str]) -> tuple[ManagedProcess, str, str]:
        port, metrics = free_port(), free_port()
        argv = [sys.executable, "-m", "devmlops"]
        for arg in args:
            if arg.startswith("--upstream="):
                arg = "--upstream=" + self.upstreams[name]
            elif arg.startswith("--listen="):
                arg = f"--listen=127.0.0.1:{port}"
            elif arg.startswith("--metrics-listen="):
                arg = f"--metrics-listen=127.0.0.1:{metrics}"
            elif arg.startswith("--config="):
                config = json.loads(arg.removeprefix("--config="))
                if "split" in config:  # the canary Service, resolved as a cluster's DNS would
                    canary = self.url(name + "-canary")
                    if canary is None:
                        raise AssertionError(f"{name}'s guard splits to {config['split']['upstream']}, not running")
                    config["split"]["upstream"] = canary
                arg = "--config=" + json.dumps(config)
            argv.append(arg)
        self.starts += 1
        log = self.workdir / f"guard-{name}-{self.starts}.log"
        process = ManagedProcess(f"guard-{name}", argv, log_path=log, env=dict(os.environ)).start()
        url = f"http://127.0.0.1:{port}"
        process.wait_until(lambda: http_ok(url + "/v2/health/live"), timeout=30, what=f"guard of {name}")
        return process, url, f"127.0.0.1:{metrics}"
