"""``make kind-e2e``: the cluster of the e2e steps (devmlops.harness.e2e) as a kind cluster, for users with Docker.

The same steps as ``make e2e`` on this machine's node (devmlops.harness.e2ecluster.LocalNode); what differs is only
how the cluster comes up: ``kind create cluster``, cert-manager and KServe (its charts, at the version the local stack
builds: hack/versions.env; KServe's chart needs cert-manager for its webhook certificate), the devmlops
ClusterStorageContainer and the model store's CA bundle set as KServe's; the same OCI archives the local path imports
loaded with ``kind load image-archive`` (and the model server named by digest on every node, as KServe's Pods ask
for it); a Service reached through the API server's proxy (the host has no route to a ClusterIP). Needs ``docker``
and ``kind`` on PATH, and the tools folder for helm and OPA like ``make e2e`` (``make tools``); the cluster is deleted
at the end (after ``--keep``'s wait too).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from devmlops.adapters.kube import api_client, create_object
from devmlops.errors import HarnessError
from devmlops.harness.e2ecluster import Images, KServeStorage, Phase, run_helm, say
from devmlops.harness.kserve import KSERVE_NAMESPACE
from devmlops.harness.processes import ManagedProcess
from devmlops.harness.pyimages import MODEL_SERVER_IMAGE

__all__ = ["KIND_TOOLS", "Kind", "main", "missing_tools", "read_version"]

KIND_TOOLS = ("docker", "kind")
CERT_MANAGER_VERSION = "v1.16.1"  # what KServe v0.16.0's hack/quick_install.sh installs
CERT_MANAGER_CHART = "oci://quay.io/jetstack/charts/cert-manager"
KSERVE_CHARTS = "oci://ghcr.io/kserve/charts"


def missing_tools(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The tools of KIND_TOOLS that are not on PATH."""
    return [tool for tool in KIND_TOOLS if which(tool) is None]


def missing_message(missing: list[str]) -> str:
    return f"a kind cluster needs Docker and kind; missing on PATH: {', '.join(missing)}"


def read_version(versions_env: Path, key: str) -> str:
    """``KEY=value`` from hack/versions.env (the versions the local tools are built at)."""
    for line in versions_env.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip().strip("\"'")
    raise HarnessError(f"{versions_env}: no {key}=...")


def _run(argv: list[str], what: str, *, timeout: float = 600) -> str:
    say("   $ " + " ".join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise HarnessError(
            f"{what}: `{' '.join(argv[:3])} ...` exited {done.returncode}: {done.stderr.strip()[-1500:]}"
        )
    return done.stdout


class Kind:
    """A kind cluster named ``name`` (it must not exist yet: the steps make namespaces and a release of their own)."""

    start_phase = "kind cluster, cert-manager, KServe"
    teardown_phase = "teardown (kind cluster)"

    def __init__(
        self, *, tools_dir: Path, workdir: Path, project_dir: Path, name: str, node_image: str | None = None
    ) -> None:
        self.tools_dir, self.workdir, self.project_dir = tools_dir, workdir, project_dir
        self.name, self.node_image = name, node_image

    def kubeconfig(self) -> Path:
        return self.workdir / "kind-kubeconfig"

    def helm(self) -> Path:
        return self.tools_dir / "helm"

    def start(self, stack: contextlib.ExitStack, *, storage: KServeStorage) -> None:
        missing = missing_tools()
        if missing:
            raise HarnessError(missing_message(missing))
        if self.name in _run(["kind", "get", "clusters"], "listing kind clusters").split():
            raise HarnessError(
                f"a kind cluster {self.name} exists already: delete it (kind delete cluster --name {self.name}) or "
                "set KIND_CLUSTER to another name"
            )
        argv = ["kind", "create", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig())]
        stack.callback(self._delete)
        _run([*argv, *(["--image", self.node_image] if self.node_image else []), "--wait", "180s"], "kind create")
        kserve = read_version(self.project_dir / "hack" / "versions.env", "KSERVE_VERSION")
        self._helm(
            "upgrade", "--install", "cert-manager", CERT_MANAGER_CHART, "--version", CERT_MANAGER_VERSION,
            "--namespace", "cert-manager", "--create-namespace", "--set", "crds.enabled=true",
        )  # fmt: skip
        self._helm(
            "upgrade", "--install", "kserve-crd", f"{KSERVE_CHARTS}/kserve-crd", "--version", kserve,
            "--namespace", KSERVE_NAMESPACE, "--create-namespace",
        )  # fmt: skip
        # Standard (raw Deployments), no Ingress; the storage initializer trusts the model store's CA.
        self._helm(
            "upgrade", "--install", "kserve", f"{KSERVE_CHARTS}/kserve-resources", "--version", kserve,
            "--namespace", KSERVE_NAMESPACE,
            "--set", "kserve.controller.deploymentMode=Standard",
            "--set", "kserve.controller.gateway.disableIngressCreation=true",
            "--set", f"kserve.storage.caBundleConfigMapName={storage.ca_config_map}",
            "--set", f"kserve.storage.caBundleVolumeMountPath={storage.ca_mount}",
        )  # fmt: skip
        with api_client(self.kubeconfig()) as api:
            create_object(DynamicClient(api), storage.storage_container)

    def _helm(self, *args: str) -> None:
        done = run_helm(self.helm(), self.kubeconfig(), self.workdir / "helm", [*args, "--wait", "--timeout", "5m"])
        if done.returncode != 0:
            raise HarnessError(f"helm {' '.join(args[:3])}: {done.stderr.strip()[-1500:]}")

    def _delete(self) -> None:
        with contextlib.suppress(HarnessError):
            _run(["kind", "delete", "cluster", "--name", self.name], "kind delete", timeout=300)

    def setup_phases(self, api: k8s.ApiClient, images: Images) -> list[Phase]:
        return [Phase("images loaded into kind", lambda: self.load_images(images))]

    def load_images(self, images: Images) -> None:
        for archive, name in images.imports():
            _run(["kind", "load", "image-archive", str(archive), "--name", self.name], f"loading {name}")
        # KServe's Pods name the model server by digest: every node gets that name too (no pull).
        for node in _run(["kind", "get", "nodes", "--name", self.name], "listing kind nodes").split():
            ctr = ["docker", "exec", node, "ctr", "--namespace", "k8s.io", "image"]
            _run([*ctr, "tag", "--force", MODEL_SERVER_IMAGE, images.model_server_ref], f"naming on {node}")

    def post_to_service(
        self, api: k8s.ApiClient, service: Mapping[str, Any], path: str, body: Mapping[str, Any]
    ) -> tuple[str, Callable[[], bytes]]:
        """Through the API server's Service proxy: a kind cluster's ClusterIPs are not routed from the host."""
        meta, port = service["metadata"], service["spec"]["ports"][0]["port"]
        resource = f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}:{port}/proxy/{path}"

        def post() -> bytes:
            method, url, headers, data, form = api.param_serialize(
                "POST",
                resource,
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=dict(body),
                auth_settings=["BearerToken"],
            )
            response = api.call_api(
                method, url, header_params=headers, body=data, post_params=form, _request_timeout=10
            )
            answer: bytes = response.read()
            if not 200 <= response.status < 300:
                raise ApiException(status=response.status, reason=f"{response.reason}: {answer[:300]!r}")
            return answer

        return f"{api.configuration.host}{resource}", post

    def processes(self) -> Mapping[str, ManagedProcess | None]:
        return {}  # the control plane runs in kind's node containers: not measured here

    def container_rss(self, container_id: str) -> float | None:
        return None


def main(argv: list[str] | None = None) -> int:
    """``--check``: exit 2 naming what of KIND_TOOLS is missing on PATH (what ``make kind-e2e`` runs first)."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--check"]:
        print("usage: python -m devmlops.harness.kindcluster --check", file=sys.stderr)
        return 2
    missing = missing_tools()
    if missing:
        print(missing_message(missing), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
