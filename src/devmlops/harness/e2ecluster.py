"""The clusters ``make e2e`` and ``make kind-e2e`` run their steps on: what differs between them, behind one interface.

The e2e steps (devmlops.harness.e2e: the chart installed, helm test, a signed model served, tampered, revoked,
deleted) only talk to a Kubernetes API. What they need from a cluster is here: its kubeconfig and helm, KServe with
the devmlops storage container and the model store's CA bundle, the images built here on its nodes (and named by
digest too, as KServe's Pods ask for the model server), a way to send a request to a Service, and, where it can
tell, the memory of its processes. ``LocalNode`` is this machine's control plane, real KServe and node
(devmlops.harness.controlplane, kserve, node); ``Kind`` is a kind cluster for users with Docker
(devmlops.harness.kindcluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from devmlops.adapters.kube import create_object
from devmlops.errors import HarnessError
from devmlops.harness.clusterdns import CLUSTER_DNS_IP
from devmlops.harness.clusterdns import manifests as cluster_dns_manifests
from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.images import OPA_IMAGE
from devmlops.harness.kserve import KServe
from devmlops.harness.node import Node, NodeUnavailableError
from devmlops.harness.processes import ManagedProcess
from devmlops.harness.pyimages import DEVMLOPS_KSERVE_IMAGE, MODEL_SERVER_IMAGE

__all__ = [
    "Cluster",
    "E2EFailure",
    "Images",
    "KServeStorage",
    "LocalNode",
    "Phase",
    "container_rss",
    "process_rss",
    "run_helm",
    "say",
    "wait_for",
]

# How long to wait for another devmlops node to leave the machine (every wait here is bounded).
NODE_LOCK_WAIT = float(os.environ.get("DEVMLOPS_E2E_NODE_WAIT", "900"))


class E2EFailure(HarnessError):
    """A step did not go as expected; the message says what was seen."""


def say(message: str) -> None:
    print(f"[e2e] {message}", flush=True)


def wait_for(probe: Callable[[], Any], *, timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll ``probe`` until it returns something true; E2EFailure (with the last exception, if any) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            value = probe()
            if value:
                return value
        except (ApiException, OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = f" (last: {exc.__class__.__name__}: {str(exc)[:300]})"
        if time.monotonic() > deadline:
            raise E2EFailure(f"{what}: not within {timeout:.0f}s{last}")
        time.sleep(every)


def run_helm(
    helm: Path, kubeconfig: Path, home: Path, args: list[str], *, timeout: float = 360
) -> subprocess.CompletedProcess[str]:
    """helm with its own HOME and caches under ``home`` (nothing of the user's), against ``kubeconfig``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    say("   $ helm " + " ".join(args))
    return subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def process_rss(pid: int) -> float:
    """The RSS (MiB) of one process of this machine (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def container_rss(container_id: str) -> float:
    """The summed RSS (MiB) of the processes in a container's cgroup (found through /proc/<pid>/cgroup)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if container_id in cgroups:
            total += process_rss(int(entry.name))
    return total


@dataclass
class Images:
    """The OCI archives built here (devmlops.harness.pyimages, images) and the model server's name by digest."""

    devmlops: Path
    model_server: Path
    opa: Path
    model_server_ref: str = ""  # pinned by digest

    def imports(self) -> list[tuple[Path, str]]:
        """(archive, the name its Pods ask for), as every cluster gets them."""
        return [(self.devmlops, DEVMLOPS_KSERVE_IMAGE), (self.model_server, MODEL_SERVER_IMAGE), (self.opa, OPA_IMAGE)]


@dataclass(frozen=True)
class KServeStorage:
    """How KServe's storage initializer is set up on a cluster: the devmlops ClusterStorageContainer (with the local
    image), and the ConfigMap (in KServe's namespace) of the CA that the in-cluster model store's certificate is from,
    mounted at ``ca_mount`` (KServe's caBundleConfigMapName and caBundleVolumeMountPath)."""

    storage_container: dict[str, Any]
    ca_config_map: str
    ca_mount: str


@dataclass(frozen=True)
class Phase:
    """A timed phase of the run (its name is a row of the table): a step of the story, or of a cluster's own setup."""

    name: str
    run: Callable[[], None]


class Cluster(Protocol):
    """What the e2e steps run on. ``start`` brings it up (its teardown on ``stack``); after it, ``kubeconfig`` and
    ``helm`` are usable."""

    start_phase: str  # the timed phase of ``start``
    teardown_phase: str

    def start(self, stack: contextlib.ExitStack, *, storage: KServeStorage) -> None: ...
    def kubeconfig(self) -> Path: ...
    def helm(self) -> Path: ...
    def setup_phases(self, api: k8s.ApiClient, images: Images) -> list[Phase]: ...
    def post_to_service(
        self, api: k8s.ApiClient, service: Mapping[str, Any], path: str, body: Mapping[str, Any]
    ) -> tuple[str, Callable[[], bytes]]: ...
    def processes(self) -> Mapping[str, ManagedProcess | None]: ...
    def container_rss(self, container_id: str) -> float | None: ...


class LocalNode:
    """This machine: the control plane (with the controller manager; Pods are its clients), the real KServe with the
    model store's CA for its storage initializer, the node (containerd, kubelet, kube-scheduler, kube-proxy) and a
    small cluster DNS. Images are imported into the node's containerd; Services are reached from this machine
    through kube-proxy's rules."""

    start_phase = "control plane, KServe, node"
    teardown_phase = "teardown (node, control plane)"

    def __init__(self, *, tools_dir: Path, workdir: Path) -> None:
        self.tools_dir, self.workdir = tools_dir, workdir
        self.cp: ControlPlane | None = None
        self.kserve: KServe | None = None
        self.node: Node | None = None

    def start(self, stack: contextlib.ExitStack, *, storage: KServeStorage) -> None:
        self.cp = stack.enter_context(
            ControlPlane(bin_dir=self.tools_dir, controller_manager=True, pod_clients=True, log=say)
        )
        overrides = {
            "storageInitializer": {
                "caBundleConfigMapName": storage.ca_config_map,
                "caBundleVolumeMountPath": storage.ca_mount,
            }
        }
        storage_container = self.workdir / "storage-container.yaml"
        storage_container.write_text(yaml.safe_dump(storage.storage_container))
        self.kserve = stack.enter_context(
            KServe(self.cp, manifests=[storage_container], config_overrides=overrides, log=say)
        )
        self.node = self._start_node(stack)

    def _start_node(self, stack: contextlib.ExitStack) -> Node:
        """The node; while another devmlops node holds this machine (one per machine), wait for it (bounded)."""
        assert self.cp is not None
        deadline = time.monotonic() + NODE_LOCK_WAIT
        while True:
            node = Node(self.cp, bin_dir=self.tools_dir, log=say, cluster_dns=CLUSTER_DNS_IP)
            try:
                return stack.enter_context(node)
            except NodeUnavailableError as exc:
                if "another devmlops node runs" not in exc.user_message or time.monotonic() > deadline:
                    raise
                say(f"   {exc.user_message}; waiting for it (at most {NODE_LOCK_WAIT:.0f}s in all)")
                time.sleep(15)

    def kubeconfig(self) -> Path:
        assert self.cp is not None
        return self.cp.kubeconfig()

    def helm(self) -> Path:
        return self.tools_dir / "helm"

    def setup_phases(self, api: k8s.ApiClient, images: Images) -> list[Phase]:
        return [
            Phase("images imported into the node", lambda: self.import_images(images)),
            Phase("cluster DNS", lambda: self.start_cluster_dns(api)),
        ]

    def import_images(self, images: Images) -> None:
        node = self.node
        assert node is not None
        imports = images.imports()
        # In parallel: each import is a few seconds of reading, decompressing and unpacking layers.
        with ThreadPoolExecutor(max_workers=len(imports)) as pool:
            for done in [pool.submit(node.import_image, archive, name) for archive, name in imports]:
                done.result()
        # KServe's Pods name the model server by digest (the webhook admits only pinned serving images): the
        # image gets that name too, so the kubelet finds it without pulling.
        node.tag_image(MODEL_SERVER_IMAGE, images.model_server_ref)

    def start_cluster_dns(self, api: k8s.ApiClient) -> None:
        for doc in cluster_dns_manifests(DEVMLOPS_KSERVE_IMAGE):
            create_object(DynamicClient(api), doc)
        apps = k8s.AppsV1Api(api)

        def ready() -> bool:
            deployment = apps.read_namespaced_deployment("cluster-dns", "kube-system")
            return bool(deployment.status and deployment.status.ready_replicas)

        wait_for(ready, timeout=120, what="the cluster DNS ready")

    def post_to_service(
        self, api: k8s.ApiClient, service: Mapping[str, Any], path: str, body: Mapping[str, Any]
    ) -> tuple[str, Callable[[], bytes]]:
        """From this machine to the Service's ClusterIP, through kube-proxy's rules."""
        port = service["spec"]["ports"][0]["port"]
        url = f"http://{service['spec']['clusterIP']}:{port}/{path}"
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )

        def post() -> bytes:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the Service's ClusterIP
                data: bytes = response.read()
                return data

        return url, post

    def processes(self) -> Mapping[str, ManagedProcess | None]:
        assert self.cp is not None
        assert self.kserve is not None
        assert self.node is not None
        return {**self.cp.processes(), "kserve-manager": self.kserve.process, **self.node.processes()}

    def container_rss(self, container_id: str) -> float | None:
        return container_rss(container_id)
