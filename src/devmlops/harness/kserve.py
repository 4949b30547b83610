"""The real KServe controller (``cmd/manager``, built by hack/tools.sh) beside a local control plane, with its
admission webhooks registered by URL on loopback, as a KServe install in a cluster runs it.

devmlops's main path for users goes through KServe: what its defaulter, validator, controller and pod mutator do
with the InferenceService the operator writes decides what runs. Stub CRDs cannot show that; this does. KServe runs
in Standard (raw Deployment) mode without Istio or an ingress, as the design's local stack has no network layer.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client, denial_message
from devmlops.adapters.pki import new_ca
from devmlops.errors import HarnessError
from devmlops.harness.controlplane import KSERVE_USER, ControlPlane, load_yaml_documents
from devmlops.harness.processes import Lifecycle, ManagedProcess, free_port, http_ok

__all__ = [
    "KSERVE_NAMESPACE",
    "SKLEARN_IMAGE",
    "KServe",
    "KServeFiles",
    "default_storage_container",
    "find_kserve",
    "install_kserve_crds",
    "local_cluster",
    "server_side_apply",
]

KSERVE_NAMESPACE = "kserve"
CONFIG_MAP_NAME = "inferenceservice-config"
FIELD_MANAGER = "devmlops-harness"
APPLY_PATCH = "application/apply-patch+yaml"
MANAGER = "kserve-manager"
# What hack/tools.sh copies from the KServe module beside the binary (the harness never reads the module itself).
CRDS_DIR = "kserve-crds"
CONFIG_DIR = "kserve-config"
WEBHOOKS_FILE = "webhooks.yaml"  # config/webhook/manifests.yaml
CONFIG_MAP_FILE = "inferenceservice-config.yaml"  # config/configmap/inferenceservice.yaml
SKLEARN_RUNTIME_FILE = "kserve-sklearnserver.yaml"  # config/runtimes/kserve-sklearnserver.yaml
DEFAULT_STORAGE_CONTAINER_FILE = "default-storage-container.yaml"  # config/storagecontainers/default.yaml
# No image is ever pulled here (there is no node), so this digest is a placeholder; it is a digest because the
# devmlops webhook admits only digest-pinned serving images, and the repository name is the one it recognises.
SKLEARN_IMAGE = "docker.io/kserve/sklearnserver@sha256:" + "5" * 64
# The settings this harness changes in KServe's own inferenceservice-config (everything else stays upstream's):
# raw Deployments instead of Knative, no Istio VirtualService and no Ingress (there is no network layer here).
CONFIG_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    "deploy": {"defaultDeploymentMode": "Standard"},
    "ingress": {"disableIstioVirtualHost": True, "disableIngressCreation": True},
}
_CLUSTER_KINDS = {
    "ClusterStorageContainer": "clusterstoragecontainers",
    "ClusterServingRuntime": "clusterservingruntimes",
}
_WEBHOOK_HOSTS = ["127.0.0.1", "localhost"]


@dataclass(frozen=True, slots=True)
class KServeFiles:
    """The KServe controller binary and the files from its module that the harness installs."""

    manager: Path
    crds: Path
    config: Path


def find_kserve(bin_dir: Path) -> KServeFiles:
    """KServe's files in ``bin_dir``, or a ``HarnessError`` that names what is missing and how to get it."""
    files = KServeFiles(bin_dir / MANAGER, bin_dir / CRDS_DIR, bin_dir / CONFIG_DIR)
    wanted = [
        files.manager,
        files.crds,
        *(
            files.config / name
            for name in (WEBHOOKS_FILE, CONFIG_MAP_FILE, SKLEARN_RUNTIME_FILE, DEFAULT_STORAGE_CONTAINER_FILE)
        ),
    ]
    missing = [str(path.relative_to(bin_dir)) for path in wanted if not path.exists()]
    if missing:
        raise HarnessError(
            f"{bin_dir} lacks KServe's {', '.join(missing)}: run `make tools` and use the folder it prints "
            "(it builds github.com/kserve/kserve cmd/manager and copies its CRDs and config beside it)"
        )
    return files


def server_side_apply(client: k8s.ApiClient, doc: Mapping[str, Any]) -> None:
    """Create or update ``doc`` by server-side apply, as ``kubectl apply --server-side`` does.

    Client-side apply keeps the whole object in an annotation, and KServe's InferenceService CRD (about 1 MB) is
    over the 256 KiB limit; server-side apply has no such copy, and applying the same object again is a no-op.
    """
    kind, meta = str(doc.get("kind")), doc.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    body: Any = doc
    options: dict[str, Any] = {
        "field_manager": FIELD_MANAGER,
        "force": True,
        "_content_type": APPLY_PATCH,
        "_preload_content": False,  # the answer is not needed, and parsing a 1 MB CRD into models takes seconds
    }
    admission, core = k8s.AdmissionregistrationV1Api(client), k8s.CoreV1Api(client)
    response: Any
    try:
        if kind == "CustomResourceDefinition":
            response = k8s.ApiextensionsV1Api(client).patch_custom_resource_definition(name, body, **options)
        elif kind == "Namespace":
            response = core.patch_namespace(name, body, **options)
        elif kind == "ConfigMap":
            response = core.patch_namespaced_config_map(name, namespace, body, **options)
        elif kind == "MutatingWebhookConfiguration":
            response = admission.patch_mutating_webhook_configuration(name, body, **options)
        elif kind == "ValidatingWebhookConfiguration":
            response = admission.patch_validating_webhook_configuration(name, body, **options)
        elif kind in _CLUSTER_KINDS:
            group, _, version = str(doc.get("apiVersion")).rpartition("/")
            response = k8s.CustomObjectsApi(client).patch_cluster_custom_object(
                group, version, _CLUSTER_KINDS[kind], name, body, **options
            )
        else:
            raise HarnessError(f"the harness does not apply kind {kind!r} ({name})")
    except ApiException as exc:
        raise HarnessError(f"{kind} {name}: the API server refused it: {denial_message(exc)}") from exc
    response.drain_conn()  # the connection goes back to the pool only with its answer read
    response.release_conn()


def install_kserve_crds(cp: ControlPlane, *, timeout: float = 60.0) -> list[str]:
    """Every CRD of KServe's ``config/crd/full`` (InferenceService, ServingRuntime, ClusterStorageContainer,
    TrainedModel, InferenceGraph, LLMInferenceService, ...), applied and Established."""
    files = find_kserve(cp.bin_dir)
    documents = [doc for doc in load_yaml_documents(files.crds) if doc.get("kind") == "CustomResourceDefinition"]
    names = [str(doc["metadata"]["name"]) for doc in documents]
    with api_client(cp.kubeconfig()) as client:
        for doc in documents:
            server_side_apply(client, doc)
        api = k8s.ApiextensionsV1Api(client)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                response: Any = api.read_custom_resource_definition_status(name, _preload_content=False)
                conditions = (json.loads(response.data).get("status") or {}).get("conditions") or []
                response.release_conn()
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    pending.discard(name)
            if pending:
                time.sleep(0.1)
    if pending:
        raise HarnessError(f"KServe's CRDs not Established within {timeout:.0f}s: {', '.join(sorted(pending))}")
    return names


def inference_service_config(
    files: KServeFiles, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """KServe's own ``inferenceservice-config`` ConfigMap with ``CONFIG_OVERRIDES`` (then ``overrides``) merged into
    its JSON values, key by key."""
    documents = load_yaml_documents(files.config / CONFIG_MAP_FILE)
    config_map = next((doc for doc in documents if doc.get("kind") == "ConfigMap"), None)
    if config_map is None:
        raise HarnessError(f"{files.config / CONFIG_MAP_FILE}: no ConfigMap")
    data = {key: value for key, value in (config_map.get("data") or {}).items() if not key.startswith("_")}
    for settings in (CONFIG_OVERRIDES, overrides or {}):
        for key, values in settings.items():
            data[key] = json.dumps({**json.loads(data.get(key) or "{}"), **values}, indent=2)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP_NAME, "namespace": KSERVE_NAMESPACE},
        "data": data,
    }


def webhook_configurations(files: KServeFiles, *, port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """KServe's webhook configurations (names, rules, selectors, paths as its release has them), each webhook
    called by URL on ``https://127.0.0.1:<port><path>`` with ``ca_pem`` instead of through a Service."""
    configurations = []
    for doc in load_yaml_documents(files.config / WEBHOOKS_FILE):
        if doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        config = copy.deepcopy(doc)
        config["apiVersion"] = "admissionregistration.k8s.io/v1"
        config["metadata"] = {"name": doc["metadata"]["name"], "labels": {"app.kubernetes.io/part-of": "kserve"}}
        for webhook in config["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca_pem).decode(),
            }
        configurations.append(config)
    return configurations


def sklearn_runtime(files: KServeFiles, image: str = SKLEARN_IMAGE) -> dict[str, Any]:
    """KServe's sklearn ClusterServingRuntime with its image pinned by digest (the release leaves a placeholder)."""
    runtime = next(
        doc
        for doc in load_yaml_documents(files.config / SKLEARN_RUNTIME_FILE)
        if doc.get("kind") == "ClusterServingRuntime"
    )
    runtime = copy.deepcopy(runtime)
    for container in runtime["spec"]["containers"]:
        if container.get("name") == "kserve-container":
            container["image"] = image
    return runtime


def default_storage_container(files: KServeFiles) -> dict[str, Any]:
    """KServe's own ``default`` ClusterStorageContainer, as its install adds it (not installed by ``KServe``): its
    unanchored ``https?://(.+)/(.+)`` also matches ``devmlops+https://...`` URIs, and KServe takes the first match of
    an unordered list, so with it installed a Pod may get KServe's initializer instead of devmlops's."""
    return next(
        doc
        for doc in load_yaml_documents(files.config / DEFAULT_STORAGE_CONTAINER_FILE)
        if doc.get("kind") == "ClusterStorageContainer"
    )


class KServe(Lifecycle):
    """KServe's controller and webhooks for one control plane; ``stop()`` removes the registrations, then the
    process (with its webhooks gone and failurePolicy Fail, the API server would refuse every InferenceService)."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        manifests: Sequence[Path] = (),
        config_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        """``manifests``: cluster-scoped KServe objects to apply once KServe's webhooks are live (the devmlops
        ClusterStorageContainer in config/kserve/, say); KServe's sklearn ClusterServingRuntime always is.
        ``config_overrides``: more settings of KServe's ``inferenceservice-config`` (a CA bundle for the storage
        initializer, say), merged over ``CONFIG_OVERRIDES``."""
        self.cp = control_plane
        self.config_overrides = dict(config_overrides or {})
        self.files = find_kserve(control_plane.bin_dir)
        self.manifests = list(manifests)
        self._log = log
        self.workdir = control_plane.workdir / "kserve"
        self.ca = new_ca("kserve-webhook-ca")
        self.webhook_port = 0
        self.metrics_port = 0
        self.health_port = 0
        self.process: ManagedProcess | None = None
        self._registered: list[dict[str, Any]] = []

    @property
    def log_path(self) -> Path:
        return self.workdir / "kserve-manager.log"

    @property
    def certificate_dir(self) -> Path:
        """Where controller-runtime's webhook server reads tls.crt and tls.key: $TMPDIR/k8s-webhook-server/..."""
        return self.workdir / "tmp" / "k8s-webhook-server" / "serving-certs"

    def start(self) -> Self:
        started = time.monotonic()
        try:
            crds = install_kserve_crds(self.cp)
            with api_client(self.cp.kubeconfig()) as client:
                server_side_apply(
                    client, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KSERVE_NAMESPACE}}
                )
                server_side_apply(client, inference_service_config(self.files, self.config_overrides))
            self._start_manager()
            self._register_webhooks()
            with api_client(self.cp.kubeconfig()) as client:
                self._wait_webhooks_live(client)
                for doc in [sklearn_runtime(self.files), *(d for p in self.manifests for d in load_yaml_documents(p))]:
                    server_side_apply(client, doc)
            self._log(f"KServe controller and webhooks up ({len(crds)} CRDs) in {time.monotonic() - started:.1f}s")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        apiserver = self.cp.processes().get("kube-apiserver")
        try:
            if self._registered and apiserver is not None and apiserver.running():
                self._unregister_webhooks()
        finally:
            if self.process is not None:
                self.process.stop()
                self.process = None

    def _start_manager(self) -> None:
        self.certificate_dir.mkdir(parents=True, exist_ok=True)
        self.ca.issue("kserve-webhook-server", hosts=_WEBHOOK_HOSTS).write(self.certificate_dir, "tls")
        self.webhook_port, self.metrics_port, self.health_port = free_port(), free_port(), free_port()
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": str(self.cp.kubeconfig(KSERVE_USER)),
                "POD_NAMESPACE": KSERVE_NAMESPACE,
                "TMPDIR": str(self.workdir / "tmp"),
            }
        )
        argv = [
            str(self.files.manager),
            f"--webhook-port={self.webhook_port}",  # binds every interface: KServe sets no host
            f"--metrics-addr=127.0.0.1:{self.metrics_port}",
            f"--health-probe-addr=127.0.0.1:{self.health_port}",
            "--leader-elect=false",
        ]
        self.process = ManagedProcess(MANAGER, argv, log_path=self.log_path, env=env, cwd=self.workdir).start()
        self.process.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.health_port}/readyz"), timeout=60, what="/readyz"
        )

    def _register_webhooks(self) -> None:
        configurations = webhook_configurations(self.files, port=self.webhook_port, ca_pem=self.ca.cert_pem)
        with api_client(self.cp.kubeconfig()) as client:
            for config in configurations:
                server_side_apply(client, config)
                self._registered.append(config)

    def _unregister_webhooks(self) -> None:
        with api_client(self.cp.kubeconfig()) as client:
            api = k8s.AdmissionregistrationV1Api(client)
            for config in self._registered:
                delete = (
                    api.delete_mutating_webhook_configuration
                    if config["kind"] == "MutatingWebhookConfiguration"
                    else api.delete_validating_webhook_configuration
                )
                try:
                    delete(config["metadata"]["name"])
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        self._registered = []

    def _wait_webhooks_live(self, client: k8s.ApiClient, timeout: float = 30.0) -> None:
        """Dry-run InferenceServices in kube-system (which the devmlops webhook never reviews) until both of
        KServe's configurations answer: its defaulter stamps the deployment mode on a valid one, its validator
        refuses a name that starts with a digit. The API server picks up new configurations a moment later."""
        api = k8s.CustomObjectsApi(client)

        def probe(name: str) -> tuple[dict[str, Any], str]:
            body: Any = {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": name},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://probe/m"}}},
            }
            try:
                created: Any = api.create_namespaced_custom_object(
                    "serving.kserve.io", "v1beta1", "kube-system", "inferenceservices", body, dry_run="All"
                )
            except ApiException as exc:
                return {}, denial_message(exc)
            return dict(created), ""

        deadline = time.monotonic() + timeout
        mutating = validating = False
        last = ""
        while time.monotonic() < deadline and not (mutating and validating):
            assert self.process is not None
            self.process.ensure_running()
            created, _ = probe("devmlops-kserve-probe")
            annotations = (created.get("metadata") or {}).get("annotations") or {}
            mutating = mutating or "serving.kserve.io/deploymentMode" in annotations
            _, last = probe("0-devmlops-kserve-probe")
            validating = validating or "kserve-webhook-server.validator" in last
            if not (mutating and validating):
                time.sleep(0.2)
        if not (mutating and validating):
            raise HarnessError(
                f"the API server did not call KServe's webhooks within {timeout:.0f}s (defaulter: {mutating}, "
                f"validator: {validating}, last answer: {last!r}); last log lines:\n"
                f"{self.process.log_tail() if self.process else ''}"
            )


@contextmanager
def local_cluster(
    *, bin_dir: Path, project_dir: Path, log: Callable[[str], None] = lambda _msg: None
) -> Iterator[tuple[ControlPlane, KServe]]:
    """The control plane with kube-controller-manager, the devmlops CRDs, and KServe with the devmlops
    ClusterStorageContainer: what ``make run`` and the integration tests run devmlops against."""
    with (
        ControlPlane(bin_dir=bin_dir, crd_paths=[project_dir / "crds"], controller_manager=True, log=log) as cp,
        KServe(cp, manifests=[project_dir / "config" / "kserve"], log=log) as kserve,
    ):
        yield cp, kserve
