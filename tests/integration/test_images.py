"""The images built here (devmlops.harness.pyimages: Debian's Python 3.11, packages from PyPI, no Docker) run on the
local node: the devmlops CLI and verifier as a non-root user on a read-only root, the storage initializer exactly as
KServe runs it (its ClusterStorageContainer's container, KServe's /mnt/models emptyDir, no writable /tmp), and a
model server from PyPI answering a v2 prediction request from another Pod through a Service.

Runs with DEVMLOPS_NODE=1 like test_node.py (skips saying why otherwise; DEVMLOPS_REQUIRE_NODE=1 makes that a
failure). The first run builds the images (root and PyPI; about 1 min for devmlops, a few for the model server),
later runs take them from ~/.cache/devmlops/images."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from devmlops.adapters.oms import OmsVerifier
from devmlops.core.plan import ENV_PLAN, VerificationPlan
from devmlops.core.policy import Authority
from devmlops.harness.images import DEBIAN_IMAGE, debian_archive, image_cache_root
from devmlops.harness.node import BUSYBOX_IMAGE, Node
from devmlops.harness.pyimages import (
    DEVMLOPS_IMAGE,
    MODEL_SERVER_IMAGE,
    build_python_image,
    devmlops_image,
    model_server_image,
)
from tests.conftest import ROOT
from tests.integration.support import eventually

pytestmark = pytest.mark.timeout(300)

DEMO = ROOT / "config" / "demo"
MODEL_FILES = ("config.json", "model.bin")
# What the chart and the ClusterStorageContainer ask of devmlops's containers.
LOCKED_DOWN = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


@pytest.fixture(scope="module")
def images(node: Node) -> Node:
    """The devmlops and Debian images imported into the node (built first when not cached)."""
    node.import_image(build_python_image(devmlops_image(ROOT)), DEVMLOPS_IMAGE)
    node.import_image(debian_archive(image_cache_root()), DEBIAN_IMAGE)
    return node


def finished(core: k8s.CoreV1Api, namespace: str, name: str, timeout: float = 120) -> k8s.V1Pod:
    def done() -> k8s.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod: k8s.V1Pod = eventually(done, timeout=timeout, what=f"pod {namespace}/{name} finishing")
    return pod


def terminated(statuses: list[k8s.V1ContainerStatus] | None, name: str) -> k8s.V1ContainerStateTerminated:
    (status,) = [s for s in statuses or [] if s.name == name]
    assert status.state.terminated is not None, status.state
    return status.state.terminated


def model_config_map(core: k8s.CoreV1Api, namespace: str) -> None:
    """The demo model (config/demo/fraud-detector) and its signature and key, as one ConfigMap."""
    model = DEMO / "fraud-detector"
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "model"},
            "data": {
                "config.json": (model / "config.json").read_text(),
                "fraud-detector.sig": (DEMO / "fraud-detector.sig").read_text(),
                "release.pub": (DEMO / "release.pub").read_text(),
            },
            "binaryData": {"model.bin": base64.b64encode((model / "model.bin").read_bytes()).decode()},
        },
    )


def fill_model(*, tamper: bool) -> dict[str, Any]:
    """An init container that copies the model's files out of the ConfigMap (whose mount is symlinks and hidden
    folders, not a model folder) into the ``model-source`` emptyDir; ``tamper`` then changes one byte of model.bin."""
    script = "cp " + " ".join(f"/cm/{f}" for f in MODEL_FILES) + " /model-source/"
    if tamper:
        script += " && printf X | dd of=/model-source/model.bin bs=1 seek=100 conv=notrunc"
    return {
        "name": "fill",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "volumeMounts": [{"name": "cm", "mountPath": "/cm"}, {"name": "model-source", "mountPath": "/model-source"}],
    }


def model_volumes(*extra: str) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": "cm", "configMap": {"name": "model"}}]
    return volumes + [{"name": name, "emptyDir": {}} for name in ("model-source", *extra)]


def signed_digest() -> tuple[str, Authority]:
    authority = Authority(name="release", kind="key", public_key=(DEMO / "release.pub").read_text())
    signed = OmsVerifier().verify_model((DEMO / "fraud-detector.sig").read_text(), authority)
    return signed.digest, authority


def test_the_devmlops_image_runs_its_cli_as_a_non_root_user_on_a_read_only_root(
    images: Node, admin: k8s.ApiClient, namespace: str
) -> None:
    """runAsNonRoot without a runAsUser: the kubelet starts the container only because the image's user is numeric and
    not 0 (65532); the entrypoint is `devmlops`."""
    core = k8s.CoreV1Api(admin)
    cli = {"name": "cli", "image": DEVMLOPS_IMAGE, "imagePullPolicy": "Never", "args": ["--version"]}
    cli["securityContext"] = LOCKED_DOWN
    core.create_namespaced_pod(
        namespace, {"metadata": {"name": "version"}, "spec": {"restartPolicy": "Never", "containers": [cli]}}
    )

    pod = finished(core, namespace, "version")

    log = core.read_namespaced_pod_log("version", namespace)
    assert pod.status.phase == "Succeeded", log
    assert log == "devmlops, version 0.1.0\n"


def test_devmlops_verify_in_a_pod_passes_the_signed_model_and_fails_one_byte_changed(
    images: Node, admin: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(admin)
    model_config_map(core, namespace)
    digest, _ = signed_digest()
    verify = {
        "name": "verify",
        "image": DEVMLOPS_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["verify", "/model-source", "--signature", "/cm/fraud-detector.sig", "--public-key", "/cm/release.pub"],
        "securityContext": LOCKED_DOWN,
        "volumeMounts": [
            {"name": "cm", "mountPath": "/cm", "readOnly": True},
            {"name": "model-source", "mountPath": "/model-source", "readOnly": True},
        ],
    }
    for name, tamper in (("signed", False), ("tampered", True)):
        spec = {
            "restartPolicy": "Never",
            "initContainers": [fill_model(tamper=tamper)],
            "containers": [verify],
            "volumes": model_volumes(),
        }
        core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": spec})

    signed, tampered = finished(core, namespace, "signed"), finished(core, namespace, "tampered")

    log = core.read_namespaced_pod_log("signed", namespace)
    assert signed.status.phase == "Succeeded", log
    assert f"verified: fraud-detector {digest} signed by" in log
    assert "2 files" in log
    log = core.read_namespaced_pod_log("tampered", namespace)
    assert tampered.status.phase == "Failed", log
    assert terminated(tampered.status.container_statuses, "verify").exit_code == 1
    assert "devmlops verify: NOT verified: " in log
    assert "model.bin" in log


def kserve_storage_initializer(source: str) -> dict[str, Any]:
    """The init container KServe's pod mutator makes from devmlops's ClusterStorageContainer: the container as
    config/kserve/devmlops-storage-container.yaml gives it (command, the plan from the annotation, resources,
    readOnlyRootFilesystem), KServe's args [<storageUri>, /mnt/models] and its one mount, the kserve-provision-location
    emptyDir on /mnt/models. No /tmp is mounted, as in KServe's Pods; the local image stands in for devmlops:0.1.0 and
    a read-only mount of the model folder for the network (the default image has no kserve-storage)."""
    documents = yaml.safe_load((ROOT / "config/kserve/devmlops-storage-container.yaml").read_text())
    container: dict[str, Any] = dict(documents["spec"]["container"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    container |= {"image": DEVMLOPS_IMAGE, "imagePullPolicy": "Never", "args": [source, "/mnt/models"]}
    container["volumeMounts"] = [
        {"name": "kserve-provision-location", "mountPath": "/mnt/models"},
        {"name": "model-source", "mountPath": "/model-source", "readOnly": True},
    ]
    return container


def test_the_storage_initializer_runs_as_kserve_runs_it_read_only_root_and_no_writable_tmp(
    images: Node, admin: k8s.ApiClient, namespace: str
) -> None:
    """The signed model reaches the predictor's read-only /mnt/models, byte for byte; with one byte changed in the
    source the initializer exits 1 and the predictor never starts."""
    core = k8s.CoreV1Api(admin)
    model_config_map(core, namespace)
    digest, authority = signed_digest()
    plan = VerificationPlan(((DEMO / "fraud-detector.sig").read_text(),), digest, ((1, (authority,)),))
    initializer = kserve_storage_initializer("devmlops+file:///model-source")
    assert ENV_PLAN in [e["name"] for e in initializer["env"]]
    assert not any(m["mountPath"] in ("/tmp", "/var/tmp") for m in initializer["volumeMounts"])
    # The predictor, as KServe mounts /mnt/models into it: read-only.
    predictor = {
        "name": "kserve-container",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "cd /mnt/models && sha256sum " + " ".join(MODEL_FILES)],
        "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}],
    }
    for name, tamper in (("signed", False), ("tampered", True)):
        spec = {
            "restartPolicy": "Never",
            "initContainers": [fill_model(tamper=tamper), initializer],
            "containers": [predictor],
            "volumes": model_volumes("kserve-provision-location"),
        }
        metadata = {"name": name, "annotations": {"devmlops.io/verification": plan.to_json()}}
        core.create_namespaced_pod(namespace, {"metadata": metadata, "spec": spec})

    signed, tampered = finished(core, namespace, "signed"), finished(core, namespace, "tampered")

    log = core.read_namespaced_pod_log("signed", namespace, container="storage-initializer")
    assert signed.status.phase == "Succeeded", log
    assert terminated(signed.status.init_container_statuses, "storage-initializer").exit_code == 0
    assert f"devmlops: 2 files of fraud-detector match {digest}" in log
    served = core.read_namespaced_pod_log("signed", namespace, container="kserve-container")
    want = {f: hashlib.sha256((DEMO / "fraud-detector" / f).read_bytes()).hexdigest() for f in MODEL_FILES}
    assert served.split() == [part for f in MODEL_FILES for part in (want[f], f)]

    log = core.read_namespaced_pod_log("tampered", namespace, container="storage-initializer")
    assert tampered.status.phase == "Failed", log
    assert terminated(tampered.status.init_container_statuses, "storage-initializer").exit_code == 1
    assert "devmlops: NOT serving devmlops+file:///model-source: the fetched model differs" in log
    (predictor_status,) = tampered.status.container_statuses
    assert predictor_status.state.running is None
    assert predictor_status.state.terminated is None, "the predictor never started"


TRAIN = """
import json, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), "/mnt/models/model.joblib")
settings = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1"}}
json.dump(settings, open("/mnt/models/model-settings.json", "w"))
print("trained on", len(y), "iris samples")
"""

INFER = """
import json, sys, urllib.request
body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64",
                    "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}
request = urllib.request.Request(sys.argv[1], data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(request, timeout=30).read().decode())
"""


@pytest.fixture(scope="module")
def model_server(images: Node) -> str:
    images.import_image(build_python_image(model_server_image()), MODEL_SERVER_IMAGE)
    return MODEL_SERVER_IMAGE


@pytest.mark.timeout(600)
def test_the_model_server_image_answers_a_v2_prediction_from_another_pod_through_a_service(
    model_server: str, admin: k8s.ApiClient, namespace: str
) -> None:
    """MLServer with its sklearn runtime, both from PyPI, serves a model trained on scikit-learn's bundled iris data
    (by an init container from the same image); a Pod of the Debian image POSTs a v2 inference request to the
    Service's ClusterIP and gets the classes back."""
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)
    models = [{"name": "models", "mountPath": "/mnt/models"}]
    train = {"name": "train", "image": model_server, "imagePullPolicy": "Never", "command": ["python3", "-c", TRAIN]}
    server = {
        "name": "kserve-container",
        "image": model_server,
        "imagePullPolicy": "Never",
        "env": [{"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"}],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/v2/models/iris/ready", "port": 8080}, "periodSeconds": 2},
        "volumeMounts": [{**models[0], "readOnly": True}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    template = {
        "metadata": {"labels": {"app": "iris"}},
        "spec": {
            "initContainers": [train | {"volumeMounts": models}],
            "containers": [server],
            "volumes": [{"name": "models", "emptyDir": {}}],
        },
    }
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "iris"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "iris"}}, "template": template},
        },
    )
    service = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "iris"},
            "spec": {"selector": {"app": "iris"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )

    def ready() -> bool:
        status = apps.read_namespaced_deployment("iris", namespace).status
        return status.ready_replicas == 1

    eventually(ready, timeout=300, what="the iris model server Ready")
    url = f"http://{service.spec.cluster_ip}/v2/models/iris/infer"
    client = {
        "name": "client",
        "image": DEBIAN_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", INFER, url],
    }
    core.create_namespaced_pod(
        namespace, {"metadata": {"name": "client"}, "spec": {"restartPolicy": "Never", "containers": [client]}}
    )

    pod = finished(core, namespace, "client")

    log = core.read_namespaced_pod_log("client", namespace)
    assert pod.status.phase == "Succeeded", log
    answer = json.loads(log)
    assert answer["model_name"] == "iris"
    (output,) = answer["outputs"]
    assert output["data"] == [0, 2], answer  # setosa, virginica
    (server_pod,) = core.list_namespaced_pod(namespace, label_selector="app=iris").items
    trained = core.read_namespaced_pod_log(server_pod.metadata.name, namespace, container="train")
    assert trained == "trained on 150 iris samples\n"
