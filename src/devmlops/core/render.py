"""The one renderer: the children that serve an admitted ModelDeployment, as pure data.

The operator writes exactly what ``render_children`` returns; the webhook compares every child it is asked to
admit against the same rendering (``core/compare.py``), field by field. Nothing here reads the cluster.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from devmlops.core.guard import Split, guard_config_json
from devmlops.core.manifests import ModelDeployment
from devmlops.core.plan import ENV_PLAN, served_plan

__all__ = [
    "ANNOTATION_AUTOSCALER_CLASS",
    "ANNOTATION_DEPLOYMENT_MODE",
    "ANNOTATION_DIGEST",
    "ANNOTATION_POLICY_REVISION",
    "ANNOTATION_VERIFICATION",
    "CANARY_SUFFIX",
    "GUARD_CONTAINER",
    "GUARD_PORT",
    "KSERVE_AUTOSCALER_CLASS",
    "KSERVE_DEPLOYMENT_MODE",
    "KSERVE_GUARD_CONTAINER",
    "LABEL_CANARY_OF",
    "LABEL_MODEL_DEPLOYMENT",
    "LABEL_MODEL_SERVER",
    "MANAGED_BY",
    "MLSERVER_LOOPBACK_ENV",
    "MODEL_DIR",
    "REGISTRY_AUTH_ENV",
    "REGISTRY_AUTH_KEY",
    "REGISTRY_SECRET",
    "STORAGE_INITIALIZER_COMMAND",
    "VERIFY_URI_PREFIX",
    "CanaryRendering",
    "build_inference_service",
    "build_triton",
    "canary_upstream",
    "owner_reference",
    "registry_auth_env",
    "render_children",
]

VERIFY_URI_PREFIX = "devmlops+"  # storageUri scheme prefix that routes KServe to the devmlops storage initializer
ANNOTATION_DIGEST = "devmlops.io/model-digest"
ANNOTATION_POLICY_REVISION = "devmlops.io/policy-revision"
ANNOTATION_VERIFICATION = "devmlops.io/verification"
LABEL_MODEL_DEPLOYMENT = "devmlops.io/model-deployment"
# On every child and on every model server Pod of either runtime (KServe passes an InferenceService's labels on to its
# predictor Pods): the chart's PodMonitor selects the guards' Pods by it (templates/monitoring/podmonitor.yaml).
MANAGED_BY = {"app.kubernetes.io/managed-by": "devmlops"}
# KServe's mode, stated rather than left to the cluster's inferenceservice-config (KServe ships Knative, "Serverless",
# as the default). v0.16 reads "Standard" (raw Deployments); "RawDeployment" is its deprecated alias, and its
# defaulter adds "Standard" itself only where the cluster default already is. The devmlops chain (predictor
# Deployment, ReplicaSet, Pod) is the Standard one; once KServe recorded a mode in status it refuses a change.
ANNOTATION_DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
KSERVE_DEPLOYMENT_MODE = "Standard"
# KServe's autoscaler, stated too: "none" makes KServe set the predictor Deployment's replicas to minReplicas, with
# no HorizontalPodAutoscaler. Its default ("hpa") leaves replicas to an HPA whose minimum is at least 1, so the
# operator's scale to zero (minReplicas 0, a revoked model) left the model server running (found by `make e2e`).
# devmlops serves a fixed number of replicas (spec.runtime.replicas) in any case.
ANNOTATION_AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
KSERVE_AUTOSCALER_CLASS = "none"
# What KServe's storage initializer runs: the devmlops ClusterStorageContainer's command (config/kserve/), before the
# args KServe gives it (the source URI and MODEL_DIR).
STORAGE_INITIALIZER_COMMAND = ("devmlops", "storage-initializer")
# A team's own registry credentials, for the storage initializer only: the ``.dockerconfigjson`` of the Secret of this
# name in the model's namespace, if there is one (an optional secretKeyRef: without it the initializer pulls
# anonymously). The name is fixed, never a ModelDeployment field: the namespace's editors own that Secret and the
# bytes are verified against the signature whatever credentials read them (docs/policies.md, "Private registries").
REGISTRY_SECRET = "devmlops-registry-auth"  # noqa: S105 - a Secret's name, no password
REGISTRY_AUTH_KEY = ".dockerconfigjson"  # the key of a kubernetes.io/dockerconfigjson Secret
REGISTRY_AUTH_ENV = "DEVMLOPS_REGISTRY_AUTH"


def registry_auth_env() -> dict[str, Any]:
    """The storage initializer's environment entry that reads the team's registry Secret, if there is one (for
    Triton's init container and in config/kserve's ClusterStorageContainer alike)."""
    reference = {"name": REGISTRY_SECRET, "key": REGISTRY_AUTH_KEY, "optional": True}
    return {"name": REGISTRY_AUTH_ENV, "valueFrom": {"secretKeyRef": reference}}


def build_inference_service(
    model_deployment: ModelDeployment,
    *,
    plan_json: str = "",
    policy_revision: str = "",
    verifier_image: str = "",
    baseline_json: str = "",
) -> dict[str, Any]:
    """The InferenceService child.

    The storage URI gets the ``devmlops+`` prefix, which KServe routes to the devmlops ClusterStorageContainer
    (config/kserve/): it downloads the model and verifies signature and bytes before the predictor starts. The
    plan reaches that container through a predictor annotation and the downward API.

    With ``spec.guard`` (admitted only on a ClusterServingRuntime declared to run MLServer: core/gates/guard.py) the
    predictor gets the guard as KServe's collocated transformer: a container named ``transformer-container``, whose
    first port KServe's predictor Service targets; MLServer is told to listen on the Pod's loopback only, and the
    plan tells the storage initializer to refuse the server settings MLServer would read from the model's files.
    """
    metadata, spec = model_deployment.metadata, model_deployment.spec
    model, runtime = spec.model, spec.runtime
    predictor_model: dict[str, Any] = {"storageUri": VERIFY_URI_PREFIX + model.uri}
    if model.format:
        predictor_model["modelFormat"] = {"name": model.format}
    if runtime.serving_runtime:
        predictor_model["runtime"] = runtime.serving_runtime
    if runtime.resources:
        predictor_model["resources"] = copy.deepcopy(runtime.resources)
    # KServe's predictor Deployment replaces its Pods when the version changes (see build_triton: a rolling update
    # kept the old version's Pods serving, undecided, until the new version's were ready).
    predictor: dict[str, Any] = {
        "model": predictor_model,
        "minReplicas": runtime.replicas,
        "deploymentStrategy": {"type": "Recreate"},
    }
    if spec.guard is not None:
        # MLServer binds HTTP, gRPC and metrics to MLSERVER_HOST; the ports are stated too, so that none is the
        # guard's. The kubelet's readiness probe reaches MLServer through the guard (the only way in).
        predictor_model["env"] = [{"name": name, "value": value} for name, value in MLSERVER_LOOPBACK_ENV]
        predictor_model["readinessProbe"] = _probe("/v2/health/ready", port=GUARD_PORT, periodSeconds=5)
        predictor["containers"] = [
            _guard_container(
                model_deployment,
                name=KSERVE_GUARD_CONTAINER,
                image=verifier_image,
                config=guard_config_json(spec.guard, baseline_json=baseline_json),
            )
        ]
    if plan_json:
        # Behind the guard, the storage initializer also refuses a settings.json at the model root: MLServer would
        # take its host from there over MLSERVER_HOST (docs/guard.md).
        served = served_plan(plan_json, runtime="kserve", mlserver_guarded=spec.guard is not None)
        predictor["annotations"] = {ANNOTATION_VERIFICATION: served}
    rollout = spec.rollout
    if rollout is not None and rollout.strategy == "canary" and rollout.canary is not None:
        predictor["canaryTrafficPercent"] = rollout.canary.traffic_percent
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": metadata.name,
            "namespace": metadata.namespace,
            "labels": {**MANAGED_BY, LABEL_MODEL_DEPLOYMENT: metadata.name},
            "annotations": {
                ANNOTATION_DIGEST: model.digest,
                ANNOTATION_POLICY_REVISION: policy_revision,
                ANNOTATION_DEPLOYMENT_MODE: KSERVE_DEPLOYMENT_MODE,
                ANNOTATION_AUTOSCALER_CLASS: KSERVE_AUTOSCALER_CLASS,
            },
        },
        "spec": {"predictor": predictor},
    }


LABEL_MODEL_SERVER = "devmlops.io/model-server"
MODEL_DIR = "/mnt/models"
PORTS = (("http", 8000), ("grpc", 8001), ("metrics", 8002))
_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


# With a guard: the guard takes Triton's HTTP port on the Pod and serves its own metrics; Triton moves to loopback.
GUARD_CONTAINER = "devmlops-guard"
GUARD_PORT = 8000
GUARD_METRICS_PORT = 9090
GUARDED_UPSTREAM_PORT = 8080
GUARDED_PORTS = (("http", GUARD_PORT), ("metrics", GUARD_METRICS_PORT))
# KServe v0.16 points the predictor Service at the first port of the container of this name (its "collocated
# transformer"), where there is one; so under KServe the guard carries it.
KSERVE_GUARD_CONTAINER = "transformer-container"
# MLServer behind the guard: every listener (HTTP, gRPC, metrics) on the Pod's loopback, HTTP where the guard forwards.
MLSERVER_LOOPBACK_ENV = (
    ("MLSERVER_HOST", "127.0.0.1"),
    ("MLSERVER_HTTP_PORT", str(GUARDED_UPSTREAM_PORT)),
    ("MLSERVER_GRPC_PORT", "8081"),
    ("MLSERVER_METRICS_PORT", "8082"),
)


def _probe(path: str, port: str | int = "http", **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, **timing}


def _probes() -> dict[str, Any]:
    return {
        "readinessProbe": _probe("/v2/health/ready", periodSeconds=5, failureThreshold=3),
        "livenessProbe": _probe("/v2/health/live", initialDelaySeconds=10, periodSeconds=10),
        "startupProbe": _probe("/v2/health/ready", periodSeconds=10, failureThreshold=60),
    }


# A gated rollout's new version: its own Deployment and Service beside the stable ones, named with this suffix. Its
# Pods carry LABEL_CANARY_OF instead of LABEL_MODEL_DEPLOYMENT, so the stable Service never selects them: the only
# traffic they get is the share the stable version's guard forwards (and whoever calls the canary Service itself).
CANARY_SUFFIX = "-canary"
LABEL_CANARY_OF = "devmlops.io/canary-of"


@dataclass(frozen=True, slots=True)
class CanaryRendering:
    """What serves while a new version is tried: the stable version (the ModelDeployment with the spec it last served,
    and that version's verification plan) keeps the ModelDeployment's children and forwards ``weight`` percent of the
    requests to the new version's children."""

    stable: ModelDeployment
    stable_plan_json: str
    weight: int
    stable_baseline_json: str = ""  # the stable version's own signed drift baseline


def _guard_container(model_deployment: ModelDeployment, *, name: str, image: str, config: str) -> dict[str, Any]:
    """The guard in front of a model server listening on the Pod's loopback at GUARDED_UPSTREAM_PORT: the same for
    every runtime but its container name (``config``: ``core/guard.py: guard_config_json``)."""
    return {
        "name": name,
        "image": image,
        "args": [
            "guard",
            f"--upstream=http://127.0.0.1:{GUARDED_UPSTREAM_PORT}",
            f"--listen=0.0.0.0:{GUARD_PORT}",
            f"--metrics-listen=0.0.0.0:{GUARD_METRICS_PORT}",
            f"--model={model_deployment.metadata.name}",  # a canary's too: its digest tells them apart
            f"--digest={model_deployment.spec.model.digest}",
            f"--config={config}",
        ],
        "ports": [{"name": port_name, "containerPort": port} for port_name, port in GUARDED_PORTS],
        **_probes(),
        # Bounded: a flood of large bodies (64 MiB each at most) can take the guard down, never the node; and a
        # guard that is down leaves no way in.
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": _RESTRICTED,
    }


def canary_upstream(model_deployment: ModelDeployment) -> str:
    """The new version's Service, as the stable version's guard reaches it (cluster DNS)."""
    metadata = model_deployment.metadata
    return f"http://{metadata.name}{CANARY_SUFFIX}.{metadata.namespace}.svc:{PORTS[0][1]}"


def build_triton(
    model_deployment: ModelDeployment,
    *,
    plan_json: str,
    verifier_image: str,
    policy_revision: str,
    split: Split | None = None,
    canary: bool = False,
    baseline_json: str = "",
    rolling: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and the Service (``canary``: the new version's, named with CANARY_SUFFIX; ``split``: the share
    of requests this version's guard forwards to the new version). ``baseline_json`` is the signed drift baseline
    (``core/baseline.py``), put into the guard's configuration when spec.guard.drift asks for drift monitoring.

    The Deployment replaces its Pods (``Recreate``): a rolling update keeps the old version's Pods until the new
    version's are ready, and nothing decides that old version any more (the operator decides the version the spec
    names), so a revoked version served on behind a new one that never became ready. Only a gated rollout's stable
    Deployment rolls (``rolling``): every version it runs is decided at each tick (core/rollout.py), and its guard's
    share changes at every step."""
    name, namespace = model_deployment.metadata.name, model_deployment.metadata.namespace
    model, runtime = model_deployment.spec.model, model_deployment.spec.runtime
    ports = GUARDED_PORTS if model_deployment.spec.guard else PORTS
    selector = {LABEL_CANARY_OF: name} if canary else {LABEL_MODEL_DEPLOYMENT: name}
    labels = {**MANAGED_BY, LABEL_MODEL_SERVER: "triton", **selector}
    pod_labels = dict(labels)
    if canary:
        name += CANARY_SUFFIX
        labels[LABEL_MODEL_DEPLOYMENT] = model_deployment.metadata.name  # the operator's watch maps it back
    annotations = {ANNOTATION_DIGEST: model.digest, ANNOTATION_POLICY_REVISION: policy_revision}
    mount = {"name": "model", "mountPath": MODEL_DIR}
    verifier = {
        "name": "devmlops-verify",
        "image": verifier_image,
        "args": ["storage-initializer", model.uri, MODEL_DIR],
        "env": [
            {"name": ENV_PLAN, "value": served_plan(plan_json, runtime="triton")},  # its formats checked as Triton's
            registry_auth_env(),  # the team's own registry credentials, when its namespace has them
        ],
        "volumeMounts": [mount, {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - a pod mount path
        "securityContext": _RESTRICTED,
    }
    guard = model_deployment.spec.guard
    # With a guard, Triton listens on the Pod's loopback only (HTTP; gRPC and its metrics off), so that the one way
    # in is the guard on the Pod's ports: nothing in the cluster can reach the model server around it.
    behind_guard = [
        "--http-address=127.0.0.1",
        f"--http-port={GUARDED_UPSTREAM_PORT}",
        "--allow-grpc=false",
        "--allow-metrics=false",
    ]
    server = {
        "name": "triton",
        "image": runtime.image,
        "args": [
            "tritonserver",
            f"--model-repository={MODEL_DIR}",
            "--model-control-mode=none",
            *(behind_guard if guard else []),
        ],
        "ports": [{"name": port_name, "containerPort": port} for port_name, port in ports],
        **_probes(),
        "volumeMounts": [{**mount, "readOnly": True}, {"name": "shm", "mountPath": "/dev/shm"}],  # noqa: S108
        "securityContext": _RESTRICTED,
    }
    if runtime.resources:
        server["resources"] = copy.deepcopy(runtime.resources)
    containers = [server]
    if guard is not None:
        # Triton is on the Pod's loopback, where the kubelet's probes cannot reach: they go to the guard, which
        # forwards GETs of /v2/health/* to Triton (a Pod is ready when Triton is, through the only way in).
        for field in ("ports", "readinessProbe", "livenessProbe", "startupProbe"):
            del server[field]
        config = guard_config_json(guard, split=split, baseline_json=baseline_json)
        containers.append(_guard_container(model_deployment, name=GUARD_CONTAINER, image=verifier_image, config=config))
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": runtime.replicas,
            **({} if rolling else {"strategy": {"type": "Recreate"}}),
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {ANNOTATION_DIGEST: model.digest}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [verifier],
                    "containers": containers,
                    "volumes": [
                        {"name": "model", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "shm", "emptyDir": {"medium": "Memory"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "selector": selector,
            "ports": [{"name": port_name, "port": port, "targetPort": port_name} for port_name, port in ports],
        },
    }
    return deployment, service


def owner_reference(model_deployment: ModelDeployment) -> dict[str, Any]:
    """The controller reference every child carries: the webhook follows it, uid by uid; the garbage collector too."""
    return {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": model_deployment.metadata.name,
        "uid": model_deployment.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def render_children(
    model_deployment: ModelDeployment,
    *,
    plan_json: str,
    verifier_image: str,
    policy_revision: str = "",
    canary: CanaryRendering | None = None,
    baseline_json: str = "",
) -> list[dict[str, Any]]:
    """The model server objects for the runtime kind, owned by the ModelDeployment; the first is the child named in
    status (InferenceService for kserve; Deployment then Service for triton). Nothing of the ModelDeployment's own
    labels or annotations is copied: what a child carries is decided here.

    With ``canary`` (a gated rollout in progress, triton only): the stable version's Deployment and Service under the
    ModelDeployment's name, its guard forwarding the share, then the new version's Deployment and Service."""
    if model_deployment.spec.runtime.kind == "triton" and canary is not None:
        split = Split(canary_upstream(model_deployment), canary.weight) if canary.weight else None
        children = [
            *build_triton(
                canary.stable,
                plan_json=canary.stable_plan_json,
                verifier_image=verifier_image,
                policy_revision=policy_revision,
                split=split,
                baseline_json=canary.stable_baseline_json,
                rolling=True,
            ),
            *build_triton(
                model_deployment,
                plan_json=plan_json,
                verifier_image=verifier_image,
                policy_revision=policy_revision,
                canary=True,
                baseline_json=baseline_json,
            ),
        ]
    elif model_deployment.spec.runtime.kind == "triton":
        rollout = model_deployment.spec.rollout
        children = list(
            build_triton(
                model_deployment,
                plan_json=plan_json,
                verifier_image=verifier_image,
                policy_revision=policy_revision,
                baseline_json=baseline_json,
                rolling=rollout is not None and rollout.strategy == "canary",  # the stable version, between rollouts
            )
        )
    else:
        children = [
            build_inference_service(
                model_deployment,
                plan_json=plan_json,
                policy_revision=policy_revision,
                verifier_image=verifier_image,
                baseline_json=baseline_json,
            )
        ]
    for child in children:
        child["metadata"]["ownerReferences"] = [owner_reference(model_deployment)]
    return children
