"""``make e2e``: the chart installed on the local node and a signed model served for real, step by step.

What runs: the control plane with kube-controller-manager and the real KServe, a node (containerd, kubelet,
kube-scheduler, kube-proxy) on this machine, a small cluster DNS, and the images built here (devmlops with the kserve
extra, MLServer with its sklearn runtime, OPA). Then, each step asserted:

1. ``helm install`` of charts/devmlops with the local images (three webhook replicas with their OPA sidecars, two
   operators electing a leader, the certificates the operator makes) and ``helm test``;
2. a signed sklearn model served: ModelDeployment -> InferenceService (devmlops) -> Deployment (KServe) -> Pod whose
   storage initializer is devmlops's, fetching the model over HTTPS from a model store running as a Pod, verifying the
   signature and every byte, then MLServer answering a v2 prediction;
3. the same model with one byte changed in storage: the initializer refuses it, the Pod never serves, and the
   ModelDeployment says why;
4. the signing key revoked (a policy change): the model is Degraded and scaled to zero, and a model-server Pod made by
   hand in the enforced namespace is denied;
5. deleting the ModelDeployment garbage-collects everything it owned.

The first step that fails stops the run (what follows builds on it). It prints a table (step, expected, outcome),
the time of every phase, and the memory (RSS) of each control-plane process and each Pod's containers; it exits 1
when a step did not go as expected (2 when it could not run at all).
Needs root, the node's Debian packages and cgroup v1, like ``DEVMLOPS_NODE=1`` (see docs/development.md):

    python -m devmlops.harness.e2e --tools-dir DIR [--project-dir DIR] [--keep] [--cluster local|kind]

``--cluster kind`` (``make kind-e2e``) runs the same steps on a kind cluster instead, for users with Docker and kind
(devmlops.harness.kindcluster; KIND_CLUSTER names it, devmlops-e2e by default; KIND_NODE_IMAGE picks its node
image). What a cluster provides to the steps is devmlops.harness.e2ecluster.Cluster; ``story`` is the steps.

While another devmlops node runs on this machine (one per machine) it waits for it, at most
``DEVMLOPS_E2E_NODE_WAIT`` seconds (900).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography.hazmat.primitives import serialization
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from devmlops.adapters.kube import api_client, create_object, denial_message
from devmlops.adapters.modelsign import sign_model
from devmlops.adapters.pki import generate_ec_key, new_ca
from devmlops.errors import DevmlopsError, HarnessError
from devmlops.harness.controlplane import REQUIRED_TOOLS, find_tools, load_yaml_documents
from devmlops.harness.e2ecluster import (
    Cluster,
    E2EFailure,
    Images,
    KServeStorage,
    LocalNode,
    Phase,
    process_rss,
    run_helm,
    say,
    wait_for,
)
from devmlops.harness.images import OPA_IMAGE, image_cache_root, manifest_digest, opa_archive
from devmlops.harness.kindcluster import Kind, missing_message, missing_tools
from devmlops.harness.kserve import KSERVE_NAMESPACE
from devmlops.harness.pyimages import (
    DEVMLOPS_KSERVE_IMAGE,
    MODEL_SERVER_IMAGE,
    build_python_image,
    devmlops_image,
    model_server_image,
)
from devmlops.operator.readiness import initializer_failure

__all__ = ["E2E", "E2EFailure", "Phase", "Report", "main", "run_e2e", "story"]

RELEASE, SYSTEM_NS = "devmlops", "devmlops-system"
STORE_NS, SERVING_NS = "store", "serving"  # the model store (not enforced); the models (devmlops.io/enforce=true)
MODEL = "iris"
STORE_HOST = f"model-store.{STORE_NS}.svc.cluster.local"
MODEL_FILE = "model.joblib"  # the model is this one file (KServe's storage library fetches one file per https:// URI)
SIGNED_URI = f"https://{STORE_HOST}/{MODEL}/{MODEL_FILE}"
TAMPERED_URI = f"https://{STORE_HOST}/tampered/{MODEL_FILE}"  # the same file with one byte changed
STORE_CA_CONFIG_MAP = "model-store-ca"  # KServe's caBundleConfigMapName: the storage initializer trusts the store's CA
CA_MOUNT = "/etc/ssl/custom-certs"  # KServe's default caBundleVolumeMountPath
RUNTIME = "devmlops-mlserver"
POLICY = "e2e-models"
GROUP, VERSION = "devmlops.io", "v1alpha1"
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # KServe's label on a predictor's Pods
KSERVE_GROUP, KSERVE_VERSION = "serving.kserve.io", "v1beta1"
CLUSTERS = ("local", "kind")  # --cluster: this machine's node (make e2e), or a kind cluster (make kind-e2e)
KIND_TOOLS_DIR = ("helm", "opa")  # what --cluster kind takes from the tools folder

# Trains the model inside the model-server image (the scikit-learn and joblib that will load it) and prints its files.
TRAIN = """
import base64, io, json, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True)
buffer = io.BytesIO()
joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), buffer)
print(json.dumps({"model.joblib": base64.b64encode(buffer.getvalue()).decode(), "samples": len(y)}))
"""
# The model store: Python's http.server over TLS, serving what the ConfigMap mounted at /models holds.
SERVE = """
import functools, http.server, ssl
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/models")
server = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/tls/tls.crt", "/tls/tls.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
print("model store: https on 8443", flush=True)
server.serve_forever()
"""
# Two flowers the model has seen the like of: a setosa and a virginica.
INFERENCE = {
    "inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}
    ]
}
EXPECTED_CLASSES = [0, 2]


# -- the report ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    step: str
    expected: str
    outcome: str
    ok: bool


@dataclass
class Report:
    """The table of steps, the phases' times and the memory figures, printed at the end."""

    rows: list[Row] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)
    memory: list[tuple[str, str, float]] = field(default_factory=list)  # (what, name, MiB)
    started: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        say(f"-- {name}")
        began = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - began
            self.phases.append((name, seconds))
            say(f"   {name}: {seconds:.1f}s")

    def check(self, step: str, expected: str, outcome: str, ok: bool) -> None:
        self.rows.append(Row(step, expected, outcome, ok))
        say(f"   {'ok' if ok else 'FAILED'}: {step}: {outcome}")
        if not ok:
            raise E2EFailure(f"{step}: expected {expected}; {outcome}")

    @property
    def failed(self) -> bool:
        return any(not row.ok for row in self.rows)

    def first_failure(self) -> str:
        """The step that stopped the run, for the last line (a CI log is often read from its end)."""
        row = next((r for r in self.rows if not r.ok), None)
        return f": {row.step}: {' '.join(row.outcome.split())[:500]}" if row else ""

    def format(self, width: int = 110) -> str:
        def cut(text: str) -> str:
            text = " ".join(text.split())
            return text if len(text) <= width else text[: width - 3] + "..."

        rows = [("STEP", "EXPECTED", "VERDICT", "OUTCOME")]
        rows += [(r.step, r.expected, "ok" if r.ok else "FAILED", cut(r.outcome)) for r in self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3] for row in rows]
        lines += ["", "PHASE" + " " * 34 + "SECONDS"]
        lines += [f"{name:<38} {seconds:7.1f}" for name, seconds in self.phases]
        lines.append(f"{'total':<38} {time.monotonic() - self.started:7.1f}")
        if self.memory:
            lines += ["", f"{'MEMORY (RSS)':<16} {'NAME':<58} {'MiB':>7}"]
            lines += [f"{what:<16} {name:<58} {mib:7.0f}" for what, name, mib in self.memory]
        return "\n".join(lines)


# -- small helpers ---------------------------------------------------------------------------------------------------


def one_byte_changed(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def write_key(directory: Path, stem: str) -> tuple[Path, str]:
    """A P-256 signing key (PKCS#8 PEM file) and its public key (PEM text)."""
    key = generate_ec_key()
    private = directory / f"{stem}.key"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


# -- the run ---------------------------------------------------------------------------------------------------------


class E2E:
    """The steps, on ``cluster`` (devmlops.harness.e2ecluster); ``tools_dir`` holds helm and OPA for either."""

    def __init__(self, *, cluster: Cluster, tools_dir: Path, project_dir: Path, workdir: Path, report: Report) -> None:
        self.cluster, self.tools_dir, self.project_dir, self.workdir = cluster, tools_dir, project_dir, workdir
        self.report = report
        self.client: k8s.ApiClient | None = None
        self.images: Images | None = None
        self.store_ca = new_ca("devmlops-e2e-model-store-ca")
        self.signed_digest = ""
        self.bundle = ""
        self.public_pem = ""

    # -- plumbing ----------------------------------------------------------------------------------------------------
    @property
    def api(self) -> k8s.ApiClient:
        assert self.client is not None
        return self.client

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def create(self, doc: dict[str, Any]) -> Any:
        return create_object(DynamicClient(self.api), doc)

    def helm(self, *args: str, timeout: float = 360) -> subprocess.CompletedProcess[str]:
        home = self.workdir / "helm"
        return run_helm(self.cluster.helm(), self.cluster.kubeconfig(), home, list(args), timeout=timeout)

    def md(self, name: str) -> dict[str, Any]:
        return self.raw(self.custom.get_namespaced_custom_object, GROUP, VERSION, SERVING_NS, "modeldeployments", name)

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        status = self.md(name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})

    def raw(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """What an API call returns, as the API server's JSON (camelCase keys, no client models)."""
        response = call(*args, _preload_content=False, **kwargs)
        data: dict[str, Any] = json.loads(response.data)
        return data

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.raw(self.core.list_namespaced_pod, namespace, label_selector=selector)[
            "items"
        ]
        return items

    def deployment(self, name: str, namespace: str) -> dict[str, Any]:
        return self.raw(self.apps.read_namespaced_deployment, name, namespace)

    def log(self, pod: str, namespace: str, container: str) -> str:
        text: str = self.core.read_namespaced_pod_log(pod, namespace, container=container)
        return text

    # -- phases ------------------------------------------------------------------------------------------------------
    def build_images(self) -> Images:
        cache = image_cache_root()
        images = Images(
            devmlops=build_python_image(devmlops_image(self.project_dir, kserve=True), log=say),
            model_server=build_python_image(model_server_image(), log=say),
            opa=opa_archive(self.tools_dir / "opa", cache),
        )
        repository = MODEL_SERVER_IMAGE.rsplit(":", 1)[0]
        images.model_server_ref = f"{repository}@{manifest_digest(images.model_server)}"
        self.images = images
        return images

    def start_cluster(self, stack: contextlib.ExitStack) -> None:
        """The cluster, with KServe's storage initializer trusting the model store's CA, and an API client."""
        storage = KServeStorage(self.storage_container(), ca_config_map=STORE_CA_CONFIG_MAP, ca_mount=CA_MOUNT)
        self.cluster.start(stack, storage=storage)
        self.client = stack.enter_context(api_client(self.cluster.kubeconfig()))

    def storage_container(self) -> dict[str, Any]:
        """config/kserve's ClusterStorageContainer with the local image, trusting the CA bundle KServe mounts (its
        own CA-bundle setup only points kserve-storage at the mount, which then writes a merged bundle to /tmp: a
        read-only root here)."""
        (doc,) = load_yaml_documents(self.project_dir / "config" / "kserve" / "devmlops-storage-container.yaml")
        container = doc["spec"]["container"]
        container["image"] = DEVMLOPS_KSERVE_IMAGE
        bundle = f"{CA_MOUNT}/cabundle.crt"
        container["env"] = [
            *container.get("env", []),
            {"name": "REQUESTS_CA_BUNDLE", "value": bundle},
            {"name": "SSL_CERT_FILE", "value": bundle},
        ]
        return doc

    def install_chart(self) -> None:
        """helm install with the local images; then what the chart makes is checked."""
        repository, tag = DEVMLOPS_KSERVE_IMAGE.rsplit(":", 1)
        opa_repository, opa_tag = OPA_IMAGE.rsplit(":", 1)
        done = self.helm(
            "install", RELEASE, str(self.project_dir / "charts" / "devmlops"),
            "--namespace", SYSTEM_NS, "--create-namespace",
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never",
            "--set", f"opa.image.repository={opa_repository}", "--set", f"opa.image.tag={opa_tag}",
            "--wait", "--timeout", "5m",
        )  # fmt: skip
        self.report.check(
            "helm install",
            "deployed, every Pod ready",
            (done.stdout.strip().splitlines() or [""])[0] + ((" " + done.stderr.strip()) if done.returncode else ""),
            done.returncode == 0,
        )
        webhook = self.deployment(f"{RELEASE}-webhook", SYSTEM_NS)
        operator = self.deployment(f"{RELEASE}-operator", SYSTEM_NS)
        pods = self.pods(SYSTEM_NS, "app.kubernetes.io/component=webhook")
        containers = sorted({c["name"] for p in pods for c in p["spec"]["containers"]})
        ready_webhooks = webhook["status"].get("readyReplicas", 0)
        ready_operators = operator["status"].get("readyReplicas", 0)
        outcome = (
            f"webhook {ready_webhooks}/{webhook['spec']['replicas']} ready ({'+'.join(containers)}), "
            f"operator {ready_operators}/{operator['spec']['replicas']} ready"
        )
        self.report.check(
            "chart: webhook replicas, OPA sidecar, operators",
            "3 webhook (webhook+opa), 2 operators",
            outcome,
            ready_webhooks == 3 and containers == ["opa", "webhook"] and ready_operators == 2,
        )
        self._check_certificates()

    def _check_certificates(self) -> None:
        """The operator made the CA and serving certificate Secrets and put the CA in every webhook's caBundle."""
        secret = self.raw(self.core.read_namespaced_secret, f"{RELEASE}-webhook-ca", SYSTEM_NS)
        ca = base64.b64decode(secret["data"]["ca.crt"])
        admission = k8s.AdmissionregistrationV1Api(self.api)
        configurations = [
            self.raw(admission.read_validating_webhook_configuration, f"{RELEASE}-validating"),
            self.raw(admission.read_mutating_webhook_configuration, f"{RELEASE}-mutating"),
        ]
        webhooks = [w for c in configurations for w in c["webhooks"]]
        patched = [w for w in webhooks if ca in base64.b64decode(w["clientConfig"].get("caBundle") or "")]
        tls = self.raw(self.core.read_namespaced_secret, f"{RELEASE}-webhook-tls", SYSTEM_NS)
        self.report.check(
            "chart: certificates by the operator",
            "CA + serving Secrets, CA in every caBundle",
            f"{len(patched)}/{len(webhooks)} webhooks carry the operator's CA; "
            f"serving Secret keys {sorted(tls['data'])}",
            len(patched) == len(webhooks) > 0 and {"tls.crt", "tls.key"} <= set(tls["data"]),
        )

    def helm_test(self) -> None:
        done = self.helm("test", RELEASE, "--namespace", SYSTEM_NS, "--timeout", "3m")
        phase = re.findall(r"Phase:\s*(\S+)", done.stdout)
        self.report.check(
            "helm test",
            "Succeeded",
            f"{', '.join(phase) or 'no test ran'}{'' if done.returncode == 0 else ': ' + done.stderr.strip()}",
            done.returncode == 0 and phase == ["Succeeded"],
        )

    # -- the model store and the signed model -----------------------------------------------------------------------
    def namespaces(self) -> None:
        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STORE_NS}})
        # Only a cluster admin labels a namespace for enforcement: there every Pod must come from a ModelDeployment.
        labels = {"devmlops.io/enforce": "true"}
        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SERVING_NS, "labels": labels}})
        for namespace in (STORE_NS, SERVING_NS):

            def account(ns: str = namespace) -> dict[str, Any]:
                return self.raw(self.core.read_namespaced_service_account, "default", ns)

            wait_for(account, timeout=30, what=f"namespace {namespace}'s default ServiceAccount")

    def store_signed_model(self) -> None:
        """The namespaces, the model trained and signed, the model store serving it (and a tampered copy)."""
        self.namespaces()
        self.start_model_store(self.train_and_sign())

    def train_and_sign(self) -> dict[str, bytes]:
        """Train the model in a Pod of the model-server image, sign its files with a fresh key; returns the files."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "train", "namespace": STORE_NS},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "train",
                        "image": MODEL_SERVER_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-c", TRAIN],
                    }
                ],
            },
        }
        self.create(pod)

        def finished() -> dict[str, Any] | None:
            found = self.raw(self.core.read_namespaced_pod, "train", STORE_NS)
            return found if found["status"].get("phase") in ("Succeeded", "Failed") else None

        trained = wait_for(finished, timeout=180, what="the training Pod finished")
        log = self.core.read_namespaced_pod_log("train", STORE_NS)
        if trained["status"]["phase"] != "Succeeded":
            raise E2EFailure(f"training failed: {log[-2000:]}")
        answer = json.loads(log.strip().splitlines()[-1])
        files = {MODEL_FILE: base64.b64decode(answer[MODEL_FILE])}
        self.core.delete_namespaced_pod("train", STORE_NS)
        model_dir = self.workdir / "model" / MODEL
        model_dir.mkdir(parents=True)
        for name, data in files.items():
            (model_dir / name).write_bytes(data)
        key, self.public_pem = write_key(self.workdir, "release")
        signature = self.workdir / "model" / f"{MODEL}.sig"
        signed = sign_model(model_dir, signature, private_key=key)
        self.signed_digest, self.bundle = signed.digest, signature.read_text()
        say(f"   trained on {answer['samples']} iris samples; signed {signed.digest} ({len(files)} files)")
        return files

    def start_model_store(self, files: Mapping[str, bytes]) -> None:
        """An HTTPS server Pod serving the signed model (one file, as KServe's storage library downloads an https://
        URI) and the same file with one byte changed; its certificate from a CA that KServe gives the storage
        initializer."""
        tampered = dict(files, **{MODEL_FILE: one_byte_changed(files[MODEL_FILE])})
        pair = self.store_ca.issue("model-store", hosts=[STORE_HOST, f"model-store.{STORE_NS}.svc", "model-store"])
        self.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "model-store-tls", "namespace": STORE_NS},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode(pair.cert_pem).decode(),
                    "tls.key": base64.b64encode(pair.key_pem).decode(),
                },
            }
        )
        stored = {"signed": files[MODEL_FILE], "tampered": tampered[MODEL_FILE]}
        self.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "models", "namespace": STORE_NS},
                "binaryData": {name: base64.b64encode(data).decode() for name, data in stored.items()},
            }
        )
        # The storage initializer trusts the store's CA: KServe copies this ConfigMap into each model's namespace (as
        # global-ca-bundle) and mounts it into the initializer.
        self.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": STORE_CA_CONFIG_MAP, "namespace": KSERVE_NAMESPACE},
                "data": {"cabundle.crt": self.store_ca.cert_pem.decode()},
            }
        )
        labels = {"app": "model-store"}
        server = {
            "name": "https",
            "image": DEVMLOPS_KSERVE_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["python", "-c", SERVE],
            "ports": [{"containerPort": 8443}],
            "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
            "securityContext": {
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
            },
            "volumeMounts": [
                {"name": "models", "mountPath": "/models", "readOnly": True},
                {"name": "tls", "mountPath": "/tls", "readOnly": True},
            ],
        }
        items = [
            {"key": "signed", "path": f"{MODEL}/{MODEL_FILE}"},
            {"key": "tampered", "path": f"tampered/{MODEL_FILE}"},
        ]
        self.create(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "model-store", "namespace": STORE_NS, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "automountServiceAccountToken": False,
                            "containers": [server],
                            "volumes": [
                                {"name": "models", "configMap": {"name": "models", "items": items}},
                                {"name": "tls", "secret": {"secretName": "model-store-tls"}},
                            ],
                        },
                    },
                },
            }
        )
        self.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "model-store", "namespace": STORE_NS},
                "spec": {"selector": labels, "ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
            }
        )
        wait_for(
            lambda: self.deployment("model-store", STORE_NS)["status"].get("readyReplicas"),
            timeout=120,
            what="the model store ready",
        )

    def policy(self, public_pem: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterModelPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "mode": "enforce",
                "onViolation": "scaleToZero",
                "selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SERVING_NS}}},
                "authorities": [{"name": "release-key", "key": {"publicKey": public_pem}}],
                "allow": {
                    "storageUris": [f"https://{STORE_HOST}/**"],
                    "images": [f"{MODEL_SERVER_IMAGE.rsplit(':', 1)[0]}@sha256:*"],
                },
            },
        }

    def serving_runtime(self, image: str) -> dict[str, Any]:
        """A ClusterServingRuntime of MLServer with its sklearn runtime (v2 protocol), the image pinned by digest."""
        return {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "ClusterServingRuntime",
            "metadata": {"name": RUNTIME},
            "spec": {
                "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": False}],
                "protocolVersions": ["v2"],
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": image,
                        "args": ["start", "/mnt/models"],
                        # The model from the environment (no model-settings.json: the model is only its file),
                        # as KServe's own kserve-mlserver runtime configures MLServer.
                        "env": [
                            {"name": "MLSERVER_MODEL_NAME", "value": "{{.Name}}"},
                            {"name": "MLSERVER_MODEL_IMPLEMENTATION", "value": "mlserver_sklearn.SKLearnModel"},
                            {"name": "MLSERVER_MODEL_URI", "value": "/mnt/models"},
                            {"name": "MLSERVER_HTTP_PORT", "value": "8080"},
                            {"name": "MLSERVER_GRPC_PORT", "value": "9000"},
                            {"name": "MLSERVER_METRICS_PORT", "value": "8082"},
                            {"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"},
                        ],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 2},
                        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                        "securityContext": {
                            "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }

    def model_deployment(self, name: str, uri: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": SERVING_NS},
            "spec": {
                "model": {"name": MODEL, "version": "1", "uri": uri, "format": "sklearn", "digest": self.signed_digest},
                "runtime": {"kind": "kserve", "servingRuntime": RUNTIME, "replicas": 1},
                "signature": {"inline": self.bundle},
            },
        }

    def wait_webhook_has_policy(self) -> None:
        """The webhook learns policies through a watch (each replica its own): dry runs until a model is admitted
        five times in a row."""
        doc = self.model_deployment("probe", SIGNED_URI)
        streak = 0

        def admitted() -> bool:
            nonlocal streak
            try:
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, SERVING_NS, "modeldeployments", doc, dry_run="All"
                )
                streak += 1
            except ApiException:
                streak = 0
            return streak >= 5

        wait_for(admitted, timeout=60, what="every webhook replica admitting the signed model (dry run)", every=0.3)

    def serve_signed_model(self) -> None:
        images = self.images
        assert images is not None
        self.create(self.policy(self.public_pem))
        self.wait_webhook_has_policy()
        try:
            # Through the webhook too: a runtime's images must be pinned by digest and allow-listed by the policy.
            self.create(self.serving_runtime(images.model_server_ref))
        except ApiException as exc:
            raise E2EFailure(f"the ClusterServingRuntime was refused: {denial_message(exc)}") from exc
        try:
            self.create(self.model_deployment(MODEL, SIGNED_URI))
        except ApiException as exc:
            raise E2EFailure(f"the signed model was refused: {denial_message(exc)}") from exc

        def ready() -> dict[str, Any] | None:
            condition = self.condition(MODEL, "ServingReady")
            return condition if condition.get("status") == "True" else None

        try:
            wait_for(ready, timeout=300, what="ModelDeployment iris ServingReady")
        except E2EFailure as exc:
            raise E2EFailure(f"{exc.user_message}; status: {self.md(MODEL).get('status')}") from exc
        status = self.md(MODEL).get("status") or {}
        self.report.check(
            "signed model: admitted, verified",
            "Admitted, the signed digest, ServingReady",
            f"phase {status.get('phase')}, {status.get('verifiedDigest')} signed by {status.get('signer')}",
            status.get("phase") == "Admitted" and status.get("verifiedDigest") == self.signed_digest,
        )
        chain = self.chain(MODEL)
        self.report.check(
            "signed model: the chain",
            "MD -> InferenceService -> Deployment -> Pod",
            " -> ".join(chain),
            len(chain) == 4,
        )
        (pod,) = self.pods(SERVING_NS, f"{ISVC_LABEL}={MODEL}")
        (initializer,) = [c for c in pod["spec"].get("initContainers") or [] if c["name"] == "storage-initializer"]
        (state,) = [s for s in pod["status"].get("initContainerStatuses") or [] if s["name"] == "storage-initializer"]
        exit_code = ((state.get("state") or {}).get("terminated") or {}).get("exitCode")
        log = self.log(pod["metadata"]["name"], SERVING_NS, "storage-initializer")
        verified = f"files of {MODEL} match {self.signed_digest}" in log
        self.report.check(
            "signed model: devmlops's storage initializer",
            "devmlops image, fetched over HTTPS, bytes verified",
            f"{initializer['image']} {initializer['args'][0]}: exit {exit_code}; "
            + (log.strip().splitlines() or [""])[-1],
            initializer["image"] == DEVMLOPS_KSERVE_IMAGE and exit_code == 0 and verified,
        )
        self.predict()

    def chain(self, name: str) -> list[str]:
        """ModelDeployment -> InferenceService -> Deployment -> Pod, each owned by the one before (uid by uid)."""

        def owners(obj: Mapping[str, Any]) -> list[str]:
            return [str(r.get("uid")) for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")]

        md = self.md(name)
        links = [f"ModelDeployment/{name}"]
        isvc = self.isvc(name)
        if owners(isvc) != [md["metadata"]["uid"]]:
            return links
        links.append(f"InferenceService/{name}")
        deployment = self.deployment(f"{name}-predictor", SERVING_NS)
        if owners(deployment) != [isvc["metadata"]["uid"]]:
            return links
        links.append(f"Deployment/{deployment['metadata']['name']}")
        replica_sets = self.raw(self.apps.list_namespaced_replica_set, SERVING_NS)["items"]
        sets = {rs["metadata"]["uid"] for rs in replica_sets if owners(rs) == [deployment["metadata"]["uid"]]}
        pods = [p for p in self.pods(SERVING_NS, f"{ISVC_LABEL}={name}") if set(owners(p)) & sets]
        if len(pods) == 1 and pods[0]["status"].get("phase") == "Running":
            links.append(f"Pod/{pods[0]['metadata']['name']} (Running)")
        return links

    def isvc(self, name: str) -> dict[str, Any]:
        return self.raw(
            self.custom.get_namespaced_custom_object,
            KSERVE_GROUP,
            KSERVE_VERSION,
            SERVING_NS,
            "inferenceservices",
            name,
        )

    def predict(self) -> None:
        """A v2 inference request to the predictor's Service, as the cluster reaches one from this machine (the local
        node: its ClusterIP through kube-proxy's rules; kind: the API server's proxy)."""
        service = self.raw(self.core.read_namespaced_service, f"{MODEL}-predictor", SERVING_NS)
        url, post = self.cluster.post_to_service(self.api, service, f"v2/models/{MODEL}/infer", INFERENCE)

        def answered() -> dict[str, Any]:
            found: dict[str, Any] = json.loads(post())
            return found

        answer = wait_for(answered, timeout=60, what=f"a prediction from {url}")
        outputs = answer.get("outputs") or [{}]
        self.report.check(
            "signed model: a v2 prediction",
            f"classes {EXPECTED_CLASSES}",
            f"POST {url} -> model {answer.get('model_name')}: {outputs[0].get('data')}",
            outputs[0].get("data") == EXPECTED_CLASSES,
        )

    def tampered_model(self) -> None:
        """The same signature and digest, served from storage where one byte of the model differs."""
        name = f"{MODEL}-tampered"
        try:
            self.create(self.model_deployment(name, TAMPERED_URI))
        except ApiException as exc:
            raise E2EFailure(f"the model was refused at admission: {denial_message(exc)}") from exc

        # Read from the failed run's termination message in the Pod's status (as the operator reads it): the log may
        # already be the next run's, as the kubelet restarts a failed init container at once.
        refusal = wait_for(
            lambda: initializer_failure(self.pods(SERVING_NS, f"{ISVC_LABEL}={name}")),
            timeout=180,
            what="the tampered model's initializer failing",
        )
        self.report.check(
            "one byte changed: storage initializer",
            "exits non-zero: bytes differ from the signature",
            refusal.message,
            "differs from its signature" in refusal.message,
        )

        last: dict[str, Any] = {}

        def says_why() -> dict[str, Any] | None:
            nonlocal last
            last = self.condition(name, "ServingReady")
            return last if last.get("reason") == "StorageInitializerFailed" else None

        with contextlib.suppress(E2EFailure):  # the check below reports what the status said instead
            wait_for(says_why, timeout=120, what=f"ModelDeployment {name} ServingReady naming the initializer")
        condition = last
        pods = self.pods(SERVING_NS, f"{ISVC_LABEL}={name}")
        serving = [
            p["metadata"]["name"]
            for p in pods
            if any(
                s.get("ready") or (s.get("state") or {}).get("running")
                for s in p["status"].get("containerStatuses") or []
            )
        ]
        self.report.check(
            "one byte changed: never serves",
            "the model server never started",
            f"model-server containers started: {serving or 'none'}",
            not serving,
        )
        self.report.check(
            "one byte changed: ModelDeployment says why",
            "ServingReady=False naming the verification",
            f"ServingReady={condition.get('status')} {condition.get('reason')}: {condition.get('message')}",
            "differs from its signature" in str(condition.get("message")),
        )

    def revoke_key(self) -> None:
        """The policy trusts a new key instead: the model no longer passes; onViolation scaleToZero."""
        _, other = write_key(self.workdir, "successor")
        body = self.policy(other)
        current = self.raw(self.custom.get_cluster_custom_object, GROUP, VERSION, "clustermodelpolicies", POLICY)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.custom.replace_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", POLICY, body)

        def degraded() -> dict[str, Any] | None:
            status = self.md(MODEL).get("status") or {}
            return status if status.get("phase") == "Degraded" else None

        status = wait_for(degraded, timeout=120, what="ModelDeployment iris Degraded")
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        self.report.check(
            "revoked key: Degraded",
            "phase Degraded, the signature no longer trusted",
            f"phase {status.get('phase')}: {conditions.get('Degraded', {}).get('message', '')}",
            conditions.get("Degraded", {}).get("status") == "True",
        )

        def scaled_down() -> str | None:
            deployment = self.deployment(f"{MODEL}-predictor", SERVING_NS)
            pods = [p for p in self.pods(SERVING_NS, f"{ISVC_LABEL}={MODEL}")]
            if deployment["spec"].get("replicas") == 0 and not pods:
                return f"Deployment {deployment['metadata']['name']} replicas 0, no Pod left"
            return None

        outcome = wait_for(scaled_down, timeout=180, what="the model server scaled to zero")
        predictor = self.isvc(MODEL)["spec"]["predictor"]
        serving = self.condition(MODEL, "ServingReady")
        self.report.check(
            "revoked key: scaled to zero",
            "no model-server Pod",
            f"InferenceService minReplicas {predictor.get('minReplicas')}; {outcome}; "
            f"ServingReady {serving.get('reason')}",
            True,
        )
        self.hand_made_pod()

    def hand_made_pod(self) -> None:
        """A model-server Pod written by hand in the enforced namespace: the model server's image and arguments,
        without a ModelDeployment behind it."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "hand-made", "namespace": SERVING_NS},
            "spec": {
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": MODEL_SERVER_IMAGE,
                        "imagePullPolicy": "Never",
                        "args": ["start", "/mnt/models"],
                    }
                ]
            },
        }
        try:
            self.create(pod)
        except ApiException as exc:
            message = denial_message(exc)
            self.report.check(
                "revoked key: a hand-made model-server Pod",
                "denied",
                f"{exc.status}: {message}",
                exc.status == 403 and "devmlops" in message,
            )
            return
        self.core.delete_namespaced_pod("hand-made", SERVING_NS)
        self.report.check("revoked key: a hand-made model-server Pod", "denied", "admitted", False)

    def delete_and_collect(self) -> None:
        for name in (MODEL, f"{MODEL}-tampered"):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, SERVING_NS, "modeldeployments", name)

        def count(call: Callable[..., Any], *args: Any) -> int:
            return len(self.raw(call, *args)["items"])

        def left() -> dict[str, int]:
            counts = {
                "ModelDeployment": count(
                    self.custom.list_namespaced_custom_object, GROUP, VERSION, SERVING_NS, "modeldeployments"
                ),
                "InferenceService": count(
                    self.custom.list_namespaced_custom_object,
                    KSERVE_GROUP,
                    KSERVE_VERSION,
                    SERVING_NS,
                    "inferenceservices",
                ),
                "Deployment": count(self.apps.list_namespaced_deployment, SERVING_NS),
                "ReplicaSet": count(self.apps.list_namespaced_replica_set, SERVING_NS),
                "Pod": count(self.core.list_namespaced_pod, SERVING_NS),
                "Service": count(self.core.list_namespaced_service, SERVING_NS),
            }
            return {kind: n for kind, n in counts.items() if n}

        before = {
            "InferenceService": 2,
            "Deployment": count(self.apps.list_namespaced_deployment, SERVING_NS),
            "Service": count(self.core.list_namespaced_service, SERVING_NS),
        }
        try:
            wait_for(lambda: not left(), timeout=120, what="everything the ModelDeployments owned collected")
            outcome = f"nothing left in namespace {SERVING_NS} (had {before})"
        except E2EFailure:
            outcome = f"left: {left()}"
        self.report.check("deleted: garbage collected", "nothing left", outcome, outcome.startswith("nothing"))

    # -- memory --------------------------------------------------------------------------------------------------------
    def measure_memory(self) -> None:
        """The RSS of the cluster's processes and of each running container, where the cluster can tell."""
        for name, proc in self.cluster.processes().items():
            if proc is not None and proc.pid is not None:
                self.report.memory.append(("process", name, process_rss(proc.pid)))
        for namespace in ("kube-system", SYSTEM_NS, STORE_NS, SERVING_NS):
            for pod in self.pods(namespace):
                for status in pod["status"].get("containerStatuses") or []:
                    if status.get("containerID") and (status.get("state") or {}).get("running"):
                        container_id = status["containerID"].split("://", 1)[-1]
                        label = f"{namespace}/{pod['metadata']['name']}/{status['name']}"
                        rss = self.cluster.container_rss(container_id)
                        if rss is not None:
                            self.report.memory.append(("pod container", label, rss))

    # -- diagnostics ---------------------------------------------------------------------------------------------------
    def diagnostics(self) -> str:
        if self.client is None:
            return ""
        lines = []
        with contextlib.suppress(Exception):
            for pod in self.raw(self.core.list_pod_for_all_namespaces)["items"]:
                status = pod.get("status") or {}
                states = [
                    f"{s['name']}:{'ready' if s.get('ready') else ','.join((s.get('state') or {}).keys())}"
                    for s in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
                ]
                meta = pod["metadata"]
                lines.append(f"pod {meta['namespace']}/{meta['name']} {status.get('phase')} {' '.join(states)}")
            events = self.raw(self.core.list_event_for_all_namespaces)["items"]
            events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
            for event in [e for e in events if e.get("type") == "Warning"][-40:]:
                obj = event.get("involvedObject") or {}
                lines.append(
                    f"event {obj.get('namespace')}/{obj.get('kind')}/{obj.get('name')} {event.get('reason')}: "
                    f"{event.get('message')}"
                )
            for name in (MODEL, f"{MODEL}-tampered"):
                with contextlib.suppress(ApiException):
                    lines.append(f"ModelDeployment {name} status: {json.dumps(self.md(name).get('status'))[:1500]}")
        return "\n".join(lines)


def story(e2e: E2E) -> list[Phase]:
    """The steps a user lives through, the same on every cluster: after the cluster's own setup, in this order."""
    return [
        Phase("helm install", e2e.install_chart),
        Phase("helm test", e2e.helm_test),
        Phase("model trained, signed, in the store", e2e.store_signed_model),
        Phase("signed model served", e2e.serve_signed_model),
        Phase("memory", e2e.measure_memory),
        Phase("one byte changed", e2e.tampered_model),
        Phase("key revoked", e2e.revoke_key),
        Phase("deleted, garbage collected", e2e.delete_and_collect),
    ]


def plan(e2e: E2E, images: Images) -> list[Phase]:
    """What runs once the cluster is up: its own setup (images onto its nodes, ...), then ``story``."""
    return [*e2e.cluster.setup_phases(e2e.api, images), *story(e2e)]


ClusterFactory = Callable[[Path], Cluster]  # the run's work folder -> the cluster (not started)


def local_node(tools_dir: Path) -> ClusterFactory:
    return lambda workdir: LocalNode(tools_dir=tools_dir, workdir=workdir)


def kind_cluster(tools_dir: Path, project_dir: Path) -> ClusterFactory:
    name = os.environ.get("KIND_CLUSTER") or "devmlops-e2e"
    node_image = os.environ.get("KIND_NODE_IMAGE") or None
    return lambda workdir: Kind(
        tools_dir=tools_dir, workdir=workdir, project_dir=project_dir, name=name, node_image=node_image
    )


def run_e2e(*, tools_dir: Path, project_dir: Path, keep: bool = False, cluster: ClusterFactory | None = None) -> int:
    """Every phase in order; the first step that fails stops the run (what follows builds on it). Returns the exit
    code: 0 when every step went as expected, 1 when one did not, 2 when the run could not start (no node here).
    ``cluster``: where the steps run (this machine's node by default)."""
    report = Report()
    workdir = Path(tempfile.mkdtemp(prefix="devmlops-e2e-"))
    provider = (cluster or local_node(tools_dir))(workdir)
    e2e = E2E(cluster=provider, tools_dir=tools_dir, project_dir=project_dir, workdir=workdir, report=report)
    code = 0
    teardown = 0.0
    try:
        with contextlib.ExitStack() as stack:
            with report.phase("images (built or cached)"):
                images = e2e.build_images()
            with report.phase(provider.start_phase):
                e2e.start_cluster(stack)
            try:
                for phase in plan(e2e, images):
                    with report.phase(phase.name):
                        phase.run()
            except (E2EFailure, ApiException, DevmlopsError) as exc:
                code = 1
                message = exc.user_message if isinstance(exc, DevmlopsError) else denial_message(exc)
                if not isinstance(exc, E2EFailure) or not report.failed:
                    report.rows.append(Row("(stopped)", "-", message, False))
                say(f"FAILED: {message}")
                say("diagnostics:\n" + e2e.diagnostics())
            if keep:
                say(f"keeping the cluster: export KUBECONFIG={provider.kubeconfig()}; Ctrl-C (or SIGTERM) stops it")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
            teardown = time.monotonic()
    except (HarnessError, DevmlopsError) as exc:
        say(f"could not run: {exc.user_message}")
        code = code or 2
    except KeyboardInterrupt:
        say("interrupted")
        code = code or 130
    finally:
        if teardown:
            report.phases.append((provider.teardown_phase, time.monotonic() - teardown))
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n" + report.format(), flush=True)
    if code == 0 and report.failed:
        code = 1
    say("every step went as expected" if code == 0 else f"exit {code}{report.first_failure()}")
    return code


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devmlops.harness.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--tools-dir", type=Path, default=os.environ.get("DEVMLOPS_TOOLS_DIR"))
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    parser.add_argument(
        "--keep", action="store_true", help="keep the cluster running at the end (also after a failure) until Ctrl-C"
    )
    parser.add_argument(
        "--cluster",
        choices=CLUSTERS,
        default="local",
        help="local: this machine's node (make e2e; root); kind: a kind cluster (make kind-e2e; Docker and kind)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    if args.cluster == "kind":
        missing = missing_tools()
        if missing:
            say(missing_message(missing))
            return 2
    try:
        # A kind cluster brings its own control plane: only helm and OPA (its image) come from the tools folder.
        tools = find_tools(args.tools_dir, KIND_TOOLS_DIR if args.cluster == "kind" else REQUIRED_TOOLS)
    except HarnessError as exc:
        say(exc.user_message)
        return 2
    project_dir = args.project_dir.resolve()
    cluster = kind_cluster(tools, project_dir) if args.cluster == "kind" else local_node(tools)
    return run_e2e(tools_dir=tools, project_dir=project_dir, keep=args.keep, cluster=cluster)


if __name__ == "__main__":
    sys.exit(main())
