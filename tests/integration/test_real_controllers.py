"""Through the real controllers, as in a cluster: kube-controller-manager turns workloads into ReplicaSets and Pods
and collects what loses its owner; KServe's controller renders the operator's InferenceService into a predictor
Deployment, and KServe's pod mutator puts the devmlops storage initializer, with the verification plan, into the Pod.

There is no node: Pods stay Pending, and what is asserted is what the API server stores. What KServe does here is
what devmlops's KServe path rests on, so the assertions spell out exactly what it rendered and injected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.servingverify import VerificationPlan
from devmlops.cli import cli
from devmlops.core.render import MANAGED_BY
from devmlops.harness.controlplane import CONTROLLERS
from devmlops.harness.kserve import SKLEARN_IMAGE, server_side_apply
from devmlops.harness.stack import DevmlopsStack
from tests.conftest import ROOT
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    create_md,
    eventually,
    md_status,
    signed_by_evidence,
    signed_model,
    trusting,
)

STORAGE_CONTAINER = yaml.safe_load((ROOT / "config" / "kserve" / "devmlops-storage-container.yaml").read_text())
PLAN = "devmlops.io/verification"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("real-controllers"))


@pytest.fixture
def short_namespace(admin: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace with a short name: KServe names the predictor's host ``<name>-predictor-<namespace>``, a
    DNS label of at most 63 characters, and refuses to render anything longer (the usual test namespace is)."""
    name = "rc-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def plain_deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    """A Deployment that is no model server (the devmlops webhook never reviews it)."""
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }


def owner(obj: Any) -> tuple[str, str]:
    (ref,) = obj.metadata.owner_references
    return ref.kind, ref.name


def test_a_deployment_gets_a_replica_set_and_pending_pods_from_the_controller_manager(
    admin: k8s.ApiClient, namespace: str
) -> None:
    apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)
    apps.create_namespaced_deployment(namespace, plain_deployment("web"))

    def two_pods() -> list[Any]:
        pods: list[Any] = core.list_namespaced_pod(namespace).items
        return pods if len(pods) == 2 else []

    pods = eventually(two_pods, what="two Pods")
    (replica_set,) = apps.list_namespaced_replica_set(namespace).items
    assert owner(replica_set) == ("Deployment", "web")
    assert {owner(pod) for pod in pods} == {("ReplicaSet", replica_set.metadata.name)}
    assert {pod.status.phase for pod in pods} == {"Pending"}  # no node here


def test_deleting_a_deployment_garbage_collects_its_replica_set_and_pods(admin: k8s.ApiClient, namespace: str) -> None:
    apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)
    apps.create_namespaced_deployment(namespace, plain_deployment("web"))
    eventually(lambda: len(core.list_namespaced_pod(namespace).items) == 2, what="two Pods")

    apps.delete_namespaced_deployment("web", namespace)  # background propagation: the garbage collector's job

    def collected() -> bool:
        return not apps.list_namespaced_replica_set(namespace).items and not core.list_namespaced_pod(namespace).items

    eventually(collected, what="the ReplicaSet and Pods garbage-collected")


def test_a_deleted_namespace_goes_away_with_everything_in_it(admin: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "t-goes-away"}})
    core.create_namespaced_config_map("t-goes-away", {"metadata": {"name": "left"}, "data": {"k": "v"}})
    k8s.AppsV1Api(admin).create_namespaced_deployment("t-goes-away", plain_deployment("web"))
    core.delete_namespace("t-goes-away")

    def gone() -> bool:
        try:
            core.read_namespace("t-goes-away")
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone, timeout=60, what="the namespace removed by the namespace controller")


def test_each_controller_gets_its_own_service_account_to_act_as(admin: k8s.ApiClient) -> None:
    # --use-service-account-credentials: the webhook sees system:serviceaccount:kube-system:<controller>, as in a
    # cluster. The names are the controllers' own (the garbage collector's is generic-garbage-collector).
    accounts = {a.metadata.name for a in k8s.CoreV1Api(admin).list_namespaced_service_account("kube-system").items}
    assert {
        "deployment-controller",
        "replicaset-controller",
        "statefulset-controller",
        "daemon-set-controller",
        "job-controller",
        "cronjob-controller",
        "generic-garbage-collector",
        "namespace-controller",
        "service-account-controller",
    } <= accounts
    assert "garbage-collector-controller" in CONTROLLERS


# -- a ModelDeployment through KServe -------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """What one admitted ModelDeployment became, each object as the API server stores it."""

    model_deployment: dict[str, Any]
    inference_service: dict[str, Any]
    deployment: dict[str, Any]
    replica_set: dict[str, Any]
    pod: dict[str, Any]


def _first(items: list[Any], client: k8s.ApiClient) -> dict[str, Any] | None:
    return dict(client.sanitize_for_serialization(items[0])) if items else None


def what_happened(admin: k8s.ApiClient, namespace: str) -> str:
    """The namespace's story when the chain stops short: each object's status and the Events (who refused what)."""
    apps, core, custom = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin), k8s.CustomObjectsApi(admin)
    lines = []
    for group, version, plural in (
        (GROUP, VERSION, "modeldeployments"),
        ("serving.kserve.io", "v1beta1", "inferenceservices"),
    ):
        for item in custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]:
            lines.append(f"{item['kind']}/{item['metadata']['name']}: {item.get('status')}")
    for workload in [
        *apps.list_namespaced_deployment(namespace).items,
        *apps.list_namespaced_replica_set(namespace).items,
    ]:
        conditions = [(c.type, c.status, c.message) for c in (workload.status.conditions or [])]
        lines.append(f"{workload.kind or type(workload).__name__}/{workload.metadata.name}: {conditions}")
    lines += [
        f"event {e.involved_object.kind}/{e.involved_object.name} {e.reason}: {e.message}"
        for e in core.list_namespaced_event(namespace).items
    ]
    return "\n".join(lines)


@contextmanager
def served(admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel) -> Iterator[Chain]:
    """A ModelDeployment of ``model``, admitted, and the chain KServe and the controller manager made of it."""
    apps, core, custom = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin), k8s.CustomObjectsApi(admin)
    with trusting(admin, stack, namespace, model, policy=f"real-{namespace}"):
        created, _ = create_md(admin, namespace, signed_by_evidence("fraud", model))
        try:
            pod = eventually(lambda: _first(core.list_namespaced_pod(namespace).items, admin), what="the predictor Pod")
        except pytest.fail.Exception:
            pytest.fail(f"no predictor Pod within 30s:\n{what_happened(admin, namespace)}", pytrace=False)
        deployment = _first(apps.list_namespaced_deployment(namespace).items, admin)
        replica_set = _first(apps.list_namespaced_replica_set(namespace).items, admin)

        def reported() -> dict[str, Any] | None:
            """The InferenceService once KServe wrote its status (just after it made the Deployment)."""
            found: dict[str, Any] = custom.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud"
            )
            return found if (found.get("status") or {}).get("conditions") else None

        isvc = eventually(reported, what="the InferenceService's status")
        assert deployment is not None
        assert replica_set is not None
        yield Chain(created, isvc, deployment, replica_set, pod)


def test_kserve_renders_the_operators_inference_service_into_a_predictor_deployment_replica_set_and_pod(
    admin: k8s.ApiClient, stack: DevmlopsStack, short_namespace: str, model: SignedModel
) -> None:
    namespace = short_namespace
    with served(admin, stack, namespace, model) as chain:
        isvc, deployment = chain.inference_service, chain.deployment
        # The deployment mode is the operator's (rendered, so the cluster's default does not decide it), kept by
        # KServe's defaulter and recorded by its controller; the defaulter adds an empty model name and resources,
        # the controller its finalizer.
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        assert isvc["status"]["deploymentMode"] == "Standard"
        assert isvc["metadata"]["finalizers"] == ["inferenceservice.finalizers"]
        assert isvc["spec"]["predictor"]["model"] == {
            "modelFormat": {"name": "sklearn"},
            "name": "",
            "resources": {},
            "storageUri": "devmlops+s3://models/fraud",
        }
        assert isvc["status"]["clusterServingRuntimeName"] == "kserve-sklearnserver"
        # Each object is owned by the one before it, uid by uid.
        assert [(r["kind"], r["name"], r["uid"]) for r in isvc["metadata"]["ownerReferences"]] == [
            ("ModelDeployment", "fraud", chain.model_deployment["metadata"]["uid"])
        ]
        links = [(isvc, deployment), (deployment, chain.replica_set), (chain.replica_set, chain.pod)]
        for parent, child in links:
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["uid"], ref["controller"]) == (parent["metadata"]["uid"], True)
        # The predictor Deployment: KServe's name and labels, the operator's labels and annotations passed on, the
        # runtime's container, and no init container (the pod mutator adds it to the Pod only).
        assert deployment["metadata"]["name"] == "fraud-predictor"
        assert deployment["metadata"]["labels"] == {
            "app": "isvc.fraud-predictor",
            "app.kubernetes.io/managed-by": "devmlops",
            "component": "predictor",
            "devmlops.io/model-deployment": "fraud",
            "serving.kserve.io/inferenceservice": "fraud",
        }
        template = deployment["spec"]["template"]
        # The Pods carry the operator's labels too: the chart's PodMonitor selects the guards' Pods by MANAGED_BY.
        assert MANAGED_BY.items() <= template["metadata"]["labels"].items()
        assert MANAGED_BY.items() <= chain.pod["metadata"]["labels"].items()
        assert template["metadata"]["annotations"]["internal.serving.kserve.io/storage-initializer-sourceuri"] == (
            "devmlops+s3://models/fraud"
        )
        assert template["metadata"]["annotations"]["devmlops.io/model-digest"] == model.digest
        assert "initContainers" not in template["spec"]
        (server,) = template["spec"]["containers"]
        assert (server["name"], server["image"]) == ("kserve-container", SKLEARN_IMAGE)
        assert server["args"] == ["--model_name=fraud", "--model_dir=/mnt/models", "--http_port=8080"]
        assert chain.pod["status"]["phase"] == "Pending"


def test_kserves_pod_mutator_injects_the_devmlops_storage_initializer_with_kserves_args_and_the_plan(
    admin: k8s.ApiClient, stack: DevmlopsStack, short_namespace: str, model: SignedModel
) -> None:
    namespace = short_namespace
    with served(admin, stack, namespace, model) as chain:
        pod = chain.pod
        (initializer,) = pod["spec"]["initContainers"]
        expected = STORAGE_CONTAINER["spec"]["container"]
        assert (initializer["name"], initializer["image"]) == ("storage-initializer", expected["image"])
        # The ClusterStorageContainer's command, KServe's args: `devmlops storage-initializer SOURCE DEST`.
        assert initializer["command"] == ["devmlops", "storage-initializer"]
        assert initializer["args"] == ["devmlops+s3://models/fraud", "/mnt/models"]
        # ... and they parse: the image's entrypoint `devmlops`, then SOURCE and DEST of its storage-initializer.
        program, subcommand = initializer["command"]
        command = cli.get_command(click.Context(cli, info_name=program), subcommand)
        assert command is not None
        assert command.make_context(subcommand, list(initializer["args"])).params == {
            "source_uri": "devmlops+s3://models/fraud",
            "destination": Path("/mnt/models"),
        }
        # The plan reaches the container through the downward API from the Pod's annotation, intact.
        assert initializer["env"] == [
            {
                "name": "DEVMLOPS_VERIFICATION",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{PLAN}']"}},
            },
            # The team's own registry credentials, if its namespace has the Secret (optional; resolved here).
            {
                "name": "DEVMLOPS_REGISTRY_AUTH",
                "valueFrom": {
                    "secretKeyRef": {"name": "devmlops-registry-auth", "key": ".dockerconfigjson", "optional": True}
                },
            },
            # KServe adds these to every storage initializer, after the merge.
            {"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"},
            {"name": "HF_XET_HIGH_PERFORMANCE", "value": "1"},
            {"name": "HF_XET_NUM_CONCURRENT_RANGE_GETS", "value": "8"},
        ]
        annotation = pod["metadata"]["annotations"][PLAN]
        assert annotation == chain.inference_service["spec"]["predictor"]["annotations"][PLAN]
        plan = VerificationPlan.from_json(annotation)
        assert (plan.bundles, plan.digest) == ((model.bundle,), model.digest)
        # What the initializer runs under: a read-only root filesystem, and the model volume as the only mount, so
        # no writable /tmp or $HOME (the image sets HOME=/tmp); KServe's termination message policy.
        assert initializer["securityContext"]["readOnlyRootFilesystem"] is True
        assert initializer["volumeMounts"] == [{"mountPath": "/mnt/models", "name": "kserve-provision-location"}]
        assert pod["spec"]["volumes"] == [{"emptyDir": {}, "name": "kserve-provision-location"}]
        assert initializer["terminationMessagePolicy"] == "FallbackToLogsOnError"
        (server,) = pod["spec"]["containers"]
        assert server["volumeMounts"] == [
            {"mountPath": "/mnt/models", "name": "kserve-provision-location", "readOnly": True}
        ]


def test_deleting_the_model_deployment_garbage_collects_the_whole_chain(
    admin: k8s.ApiClient, stack: DevmlopsStack, short_namespace: str, model: SignedModel
) -> None:
    namespace = short_namespace
    apps, core, custom = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin), k8s.CustomObjectsApi(admin)
    with served(admin, stack, namespace, model):
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "fraud")

        def left() -> dict[str, int]:
            isvcs = custom.list_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices")
            mds = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments")
            counts = {
                "ModelDeployment": len(mds["items"]),
                "InferenceService": len(isvcs["items"]),
                "Deployment": len(apps.list_namespaced_deployment(namespace).items),
                "ReplicaSet": len(apps.list_namespaced_replica_set(namespace).items),
                "Pod": len(core.list_namespaced_pod(namespace).items),
            }
            return {kind: count for kind, count in counts.items() if count}

        eventually(lambda: not left(), timeout=60, what="the chain garbage-collected")


# -- when KServe cannot render the InferenceService, the ModelDeployment says so ----------------------------------


def serving_ready(admin: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    status = md_status(admin, namespace)
    return next((c for c in status.get("conditions") or [] if c["type"] == "ServingReady"), {})


def kserve_refusal(admin: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    """ServingReady once the operator reported KServe's failure (the InferenceService has no conditions)."""

    def failed() -> dict[str, Any] | None:
        condition = serving_ready(admin, namespace)
        return condition if condition.get("status") == "False" else None

    try:
        condition: dict[str, Any] = eventually(failed, timeout=60, what="ServingReady=False with KServe's reason")
    except pytest.fail.Exception:
        pytest.fail(f"no ServingReady=False within 60s:\n{what_happened(admin, namespace)}", pytrace=False)
    isvc = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "fraud"
    )
    assert not (isvc.get("status") or {}).get("conditions"), "KServe rendered it after all"
    assert md_status(admin, namespace)["phase"] == "Admitted"
    return condition


@contextmanager
def without_storage_container(admin: k8s.ApiClient) -> Iterator[None]:
    """The devmlops ClusterStorageContainer deleted for the block, applied again after it (whatever happens)."""
    custom = k8s.CustomObjectsApi(admin)
    name = STORAGE_CONTAINER["metadata"]["name"]
    custom.delete_cluster_custom_object("serving.kserve.io", "v1alpha1", "clusterstoragecontainers", name)
    try:
        yield
    finally:
        server_side_apply(admin, STORAGE_CONTAINER)
        custom.get_cluster_custom_object("serving.kserve.io", "v1alpha1", "clusterstoragecontainers", name)


def test_without_the_devmlops_storage_container_the_model_deployment_reports_kserves_refusal(
    admin: k8s.ApiClient, stack: DevmlopsStack, short_namespace: str, model: SignedModel
) -> None:
    """KServe admits the InferenceService, but no ClusterStorageContainer claims devmlops+ URIs: its controller
    renders nothing, posts a Warning Event and writes no condition. ServingReady carries KServe's reason and message
    instead of waiting for a Ready that never comes."""
    namespace = short_namespace
    with (
        without_storage_container(admin),
        trusting(admin, stack, namespace, model, policy=f"real-{namespace}"),
    ):
        create_md(admin, namespace, signed_by_evidence("fraud", model))
        condition = kserve_refusal(admin, namespace)
        assert condition["reason"] == "InternalError"
        assert condition["message"].startswith("KServe cannot render InferenceService fraud: ")
        assert "StorageURI not supported" in condition["message"]


def test_a_predictor_host_name_over_63_characters_is_reported_as_kserves_refusal(
    admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel
) -> None:
    """``fraud-predictor-<namespace>`` is no DNS label in this long namespace: KServe renders nothing."""
    assert len(f"fraud-predictor-{namespace}") > 63
    with trusting(admin, stack, namespace, model, policy=f"real-{namespace}"[:63]):
        create_md(admin, namespace, signed_by_evidence("fraud", model))
        condition = kserve_refusal(admin, namespace)
        assert condition["reason"] == "InternalError"
        assert condition["message"].startswith("KServe cannot render InferenceService fraud: ")
        assert "must be no more than 63 characters" in condition["message"]
