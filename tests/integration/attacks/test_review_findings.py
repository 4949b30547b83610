"""Findings of a security review (attacker: mallory, a namespace editor, docs/threat-model.md).

Each attack here succeeded before its fix (the test failed): a Service taking a model's address (KServe's and the
operator's), a child changed outside enforcement after dropping the labels the webhook filters on, a model server
orphaned from its ModelDeployment, an image mounted as a volume, a model renamed out of the policy that selects it,
and an SBOM of another model bound by a chosen name. Docstrings say what the attack was; the assertions, what holds.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.blobsign import sign_blob_with_key
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    ROGUE,
    TOOLBOX,
    TRITON,
    KServePods,
    ModelPods,
    Served,
    admitted,
    as_dict,
    denied,
    exemption,
    installed_exemption,
    pod,
    pod_spec,
    policy_name,
    serve,
)
from tests.integration.attacks.conftest import create_model_deployment as _create
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    cyclonedx_sbom,
    eventually,
    installed_policy,
    signed_by_evidence,
    trusting,
)

EXTERNAL = "model.mallory.example.com"


def _impostor_service(real: dict[str, Any]) -> dict[str, Any]:
    """A Service with the real one's name, selector and ports, but of type ExternalName: cluster DNS answers the
    model's Service name with a CNAME to mallory's host; no Pod, no endpoint, nothing the webhook reviews."""
    keep = ("name", "port", "targetPort", "protocol", "appProtocol")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": real["metadata"]["name"]},
        "spec": {
            "type": "ExternalName",
            "externalName": EXTERNAL,
            "selector": dict(real["spec"].get("selector") or {}),
            "ports": [{k: v for k, v in p.items() if k in keep and v is not None} for p in real["spec"]["ports"]],
        },
    }


def _swap_service(mallory: k8s.ApiClient, namespace: str, impostor: dict[str, Any], attempts: int = 30) -> str:
    """Delete the model's Service and create the impostor under its name, until the impostor wins the race with
    whichever controller recreates the Service or devmlops refuses it; return the refusal (the test fails when the
    impostor is created). The deletion itself is refused now (test_model_service_deletion.py): the impostor, sent to
    the webhook before the API server finds the name taken, must be refused all the same."""
    core = k8s.CoreV1Api(mallory)
    name = impostor["metadata"]["name"]
    for _attempt in range(attempts):
        try:
            core.delete_namespaced_service(name, namespace)
        except ApiException as exc:
            if exc.status not in (403, 404) or (exc.status == 403 and "devmlops" not in (exc.body or "")):
                raise
        try:
            core.create_namespaced_service(namespace, cast(Any, impostor))
        except ApiException as exc:
            if exc.status == 403 and "devmlops" in (exc.body or ""):
                return str(exc.body)
            if exc.status != 409:
                raise
        else:
            pytest.fail(f"the impostor Service {name} (type ExternalName) was created", pytrace=False)
        time.sleep(0.05)
    pytest.fail(f"the impostor Service neither won nor was refused in {attempts} attempts")


def _service(admin: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return as_dict(k8s.CoreV1Api(admin).read_namespaced_service(name, namespace))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


# -- 1. traffic: the model's own Service name is taken over ------------------------------------------------------


def test_kserves_predictor_service_cannot_be_replaced_by_an_external_name_service(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, kserve_pods: KServePods
) -> None:
    """Property 1b. KServe's Service reconciler compares only ports and selector of an existing Service
    (semanticServiceEquals), never its type, externalName or owner. Mallory deletes the predictor Service (always
    allowed) and creates her own under the same name with the same ports and selector but type ExternalName: the
    webhook never sees it (no ownerReference), KServe considers it "existed" and leaves it, and
    fraud-predictor.<ns>.svc (the InferenceService's status.address) resolves to mallory's host."""
    namespace = kserve_pods.served.namespace

    def predictor_service() -> dict[str, Any] | None:
        found = _service(admin, namespace, "fraud-predictor")
        return found if found and (found["metadata"].get("ownerReferences") or []) else None

    real = eventually(predictor_service, timeout=30, what="KServe's predictor Service")
    assert "ModelDeployment fraud's Service" in _swap_service(mallory, namespace, _impostor_service(real))
    now = eventually(predictor_service, timeout=30, what="KServe's predictor Service written again")
    owners = [r.get("kind") for r in now.get("metadata", {}).get("ownerReferences") or []]
    taken = now.get("spec", {}).get("type") == "ExternalName" or "InferenceService" not in owners
    assert not taken, (
        f"the model's predictor Service is mallory's 15 s later: type {now.get('spec', {}).get('type')}, "
        f"externalName {now.get('spec', {}).get('externalName')!r}, owners {owners}; "
        "clients of the InferenceService's address reach mallory's host"
    )


def test_the_triton_service_cannot_be_replaced_and_is_written_again_at_once(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """Property 1b/3. The operator's Triton Service is deleted and recreated by mallory as an ExternalName Service
    of the same name. The webhook sees only Services a model owns (and mallory's owns nothing); the operator is
    woken only by Deployment/InferenceService events, so the impostor stays until the next re-check round
    (--recheck-interval, 300 s by default), and mallory can repeat the swap after each round."""
    namespace, name = served_triton.namespace, served_triton.child["metadata"]["name"]
    real = eventually(lambda: _service(admin, namespace, name), timeout=30, what="the operator's Triton Service")
    assert "ModelDeployment fraud's Service" in _swap_service(mallory, namespace, _impostor_service(real))
    now = eventually(lambda: _service(admin, namespace, name), timeout=30, what="the operator's Service written again")
    owners = [r.get("kind") for r in now.get("metadata", {}).get("ownerReferences") or []]
    taken = now.get("spec", {}).get("type") == "ExternalName" or "ModelDeployment" not in owners
    assert not taken, (
        f"the model's Service is mallory's 15 s later: type {now.get('spec', {}).get('type')}, "
        f"externalName {now.get('spec', {}).get('externalName')!r}, owners {owners}"
    )


# -- 2. outside enforcement: a child changed under the CEL matchCondition ----------------------------------------


def test_outside_enforcement_a_triton_child_whose_labels_are_dropped_is_still_reviewed(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, stack: DevmlopsStack, plain_namespace: str, attack_model: SignedModel
) -> None:
    """Outside enforced namespaces devmlops guarantees "the ModelDeployments it admits and their children". The
    Deployment webhook there only sees objects matching a CEL matchCondition evaluated on the NEW object (labelled
    devmlops.io/model-server, or an image named like a model server); it ignores oldObject and ownerReferences. An
    update that removes the label and sets an image with another name is never sent to the webhook."""
    namespace = plain_namespace
    with trusting(
        admin, stack, namespace, attack_model, policy=policy_name(namespace), allow={"images": list(ALLOWED_IMAGES)}
    ) as policy:
        served = serve(admin, namespace, attack_model, policy, runtime={"kind": "triton", "image": TRITON})
        apps = k8s.AppsV1Api(mallory)
        name = served.child["metadata"]["name"]
        rogue = {"spec": {"template": {"spec": {"containers": [{"name": "triton", "image": ROGUE}]}}}}
        denied(apps.patch_namespaced_deployment, name, namespace, rogue)  # control: with the label, denied
        # The same change, with the Deployment's own devmlops labels removed (the template keeps the selector label,
        # so the model's Service still routes to the new Pods; without devmlops.io/model-deployment the operator's
        # event handler does not see the Deployment either).
        labels = {"devmlops.io/model-server": None, "devmlops.io/model-deployment": None}
        denied(apps.patch_namespaced_deployment, name, namespace, {"metadata": {"labels": labels}, **rogue})


# -- 3. a model server that outlives its ModelDeployment ---------------------------------------------------------


def test_a_model_server_cannot_be_orphaned_from_its_model_deployment(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, triton_pods: ModelPods, served_triton: Served
) -> None:
    """An orphaned model server runs on where revocation and scale-to-zero no longer reach it. Mallory tries to take
    the operator's Triton Deployment out of its ModelDeployment's hands: removing its controller reference (once let
    through as "metadata only"), deleting the ModelDeployment or the Deployment with propagationPolicy Orphan (or the
    legacy orphanDependents), and relabelling a Pod so that its ReplicaSet releases it. Each is refused; a plain
    delete of the ModelDeployment still collects everything it owned."""
    namespace, name = served_triton.namespace, served_triton.child["metadata"]["name"]
    apps, core = k8s.AppsV1Api(mallory), k8s.CoreV1Api(mallory)
    custom = k8s.CustomObjectsApi(mallory)
    denied(apps.patch_namespaced_deployment, name, namespace, [{"op": "remove", "path": "/metadata/ownerReferences"}])
    message = denied(
        custom.delete_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "modeldeployments",
        "fraud",
        propagation_policy="Orphan",
    )
    assert "propagationPolicy Orphan" in message
    denied(apps.delete_namespaced_deployment, name, namespace, propagation_policy="Orphan")
    denied(apps.delete_namespaced_deployment, name, namespace, orphan_dependents=True)
    running = [p for p in core.list_namespaced_pod(namespace).items if p.metadata.labels]
    assert running, "the Triton Pod the test relabels"
    denied(
        core.patch_namespaced_pod,
        running[0].metadata.name,
        namespace,
        {"metadata": {"labels": {"pod-template-hash": "x"}}},
    )
    stored = as_dict(k8s.AppsV1Api(admin).read_namespaced_deployment(name, namespace))
    assert [r["kind"] for r in stored["metadata"]["ownerReferences"]] == ["ModelDeployment"]
    admitted(custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, "modeldeployments", "fraud")

    def collected() -> bool:
        try:
            k8s.AppsV1Api(admin).read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    eventually(collected, timeout=60, what="the Deployment garbage-collected with its ModelDeployment")


# -- 4. exemptions: an image the Pod pulls that is not one of the exemption's images -----------------------------


def test_an_exempt_pod_that_mounts_an_unlisted_image_as_a_volume_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    """An exemption admits a Pod only when every image of the Pod is one of its pinned images. An ``image``
    volume (OCI VolumeSource) makes the kubelet pull another image, by tag, and mount its content: pod_images()
    reads containers, init and ephemeral containers only."""
    core = k8s.CoreV1Api(mallory)
    body = exemption(f"atk-{enforced_namespace}", [enforced_namespace], images=[TOOLBOX], service_accounts=["toolbox"])
    with installed_exemption(admin, body):
        spec = pod_spec(TOOLBOX, service_account="toolbox")
        spec["volumes"] = [{"name": "weights", "image": {"reference": "registry.example.com/mallory/weights:latest"}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "weights", "mountPath": "/weights"}]
        try:
            created = as_dict(core.create_namespaced_pod(enforced_namespace, cast(Any, pod("toolbox-weights", spec))))
        except ApiException as exc:
            if exc.status == 403 and "devmlops" in (exc.body or ""):
                return
            raise
        volumes = created["spec"].get("volumes") or []
        if not any("image" in v for v in volumes):
            pytest.skip("this API server drops image volumes (ImageVolume feature gate off)")
        pytest.fail(f"admitted, but devmlops must deny it: an exempt Pod pulls and mounts {volumes}", pytrace=False)


# -- 5. selection and binding by an attacker-chosen name ---------------------------------------------------------


def test_a_model_renamed_in_its_spec_does_not_escape_the_policy_that_selects_it_by_name(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
) -> None:
    """A ClusterModelPolicy selects models by spec.model.name globs; that name is whatever the ModelDeployment says,
    bound to nothing signed (the OMS bundle names the model 'fraud'). With a second policy selecting the namespace
    (here the suite's usual one), the same signed bytes under another name skip the stricter policy."""
    namespace = enforced_namespace
    strict = cluster_policy(f"strict-{namespace}"[:63], namespace, attack_model.key.public_pem, sbom={"required": True})
    strict["spec"]["selector"]["models"] = ["fraud"]
    with installed_policy(admin, stack, strict):
        doc = signed_by_evidence("fraud", attack_model)
        doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
        assert "sbom" in denied(_create, mallory, namespace, doc).lower()  # control: the fraud model needs one
        doc["spec"]["model"]["name"] = "scratchpad"  # same bundle, same digest, same bytes
        denied(_create, mallory, namespace, doc)


def test_an_sbom_of_another_model_does_not_bind_by_the_name_the_model_deployment_gives_itself(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """With sbom.allowNameBinding, the SBOM gate accepts a model component named like spec.model.name, which the
    requester chooses: a signed SBOM of any other model (its license, model card, stated risk tier) is made to
    describe the signed bytes by naming the ModelDeployment after that model."""
    namespace = enforced_namespace
    other_sbom = cyclonedx_sbom("benign", "sha256:" + "1" * 64, license_id="Apache-2.0")
    other_signature = sign_blob_with_key(other_sbom.encode(), attack_model.key.private.read_bytes())
    sbom_rules = {"required": True, "requireSignature": True, "allowNameBinding": True}
    with trusting(
        admin,
        stack,
        namespace,
        attack_model,
        policy=policy_name(namespace),
        allow={"images": list(ALLOWED_IMAGES)},
        sbom=sbom_rules,
    ):
        sbom = {"format": "cyclonedx", "document": {"inline": other_sbom}, "signature": {"inline": other_signature}}
        doc = signed_by_evidence("fraud", attack_model, sbom=sbom)
        doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
        assert "binding" in denied(_create, mallory, namespace, doc).lower()  # control: under its own name
        doc["spec"]["model"]["name"] = "benign"
        denied(_create, mallory, namespace, doc)


def test_a_signed_sbom_of_another_model_does_not_bind_through_one_file_both_models_carry(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """The release key signs the SBOMs of all its models. One of them, "layers", is a single file whose bytes are the
    same as the config.json of "fraud"; its signed SBOM (Apache-2.0) binds by that file's SHA-256, as a one-file
    model's may. Shown with "fraud", whose own signed SBOM says GPL-3.0-only (denied by the policy), it bound through
    the shared file and fraud was admitted with another model's licence and model card."""
    namespace = enforced_namespace
    key = attack_model.key.private.read_bytes()
    shared = hashlib.sha256(b'{"layers": 2}').hexdigest()  # make_model's config.json: fraud's, and all of "layers"
    sbom_rules = {"required": True, "requireSignature": True, "deniedLicenses": ["GPL-3.0-only"]}

    def with_sbom(document: str) -> dict[str, Any]:
        sbom = {"document": {"inline": document}, "signature": {"inline": sign_blob_with_key(document.encode(), key)}}
        doc = signed_by_evidence("fraud", attack_model, sbom=sbom)
        doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
        return doc

    with trusting(
        admin,
        stack,
        namespace,
        attack_model,
        policy=policy_name(namespace),
        allow={"images": list(ALLOWED_IMAGES)},
        sbom=sbom_rules,
    ):
        own = cyclonedx_sbom("fraud", attack_model.digest, license_id="GPL-3.0-only")
        assert "GPL-3.0-ONLY" in denied(_create, mallory, namespace, with_sbom(own))  # control: its own SBOM
        borrowed = cyclonedx_sbom("layers", "sha256:" + shared, license_id="Apache-2.0")
        message = denied(_create, mallory, namespace, with_sbom(borrowed))
        assert "SBOM binding" in message
        assert "not covered: weights.bin" in message


def test_a_service_squatting_a_models_address_before_the_model_exists_blocks_the_model_until_removed(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, trusted: Any
) -> None:
    """Mallory creates fraud-predictor (ExternalName) before anyone deploys "fraud": KServe would keep it as the
    predictor's Service. A new ModelDeployment whose Service names are taken by Services no model owns is refused,
    naming the Service; once it is gone the same ModelDeployment is admitted and served."""
    namespace = enforced_namespace
    impostor = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fraud-predictor"},
        "spec": {"type": "ExternalName", "externalName": EXTERNAL, "ports": [{"name": "http", "port": 80}]},
    }
    core = k8s.CoreV1Api(mallory)
    admitted(core.create_namespaced_service, namespace, cast(Any, impostor))  # no model named fraud yet
    doc = signed_by_evidence("fraud", attack_model)
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    create = k8s.CustomObjectsApi(admin).create_namespaced_custom_object

    def refusal() -> str:
        try:
            create(GROUP, VERSION, namespace, "modeldeployments", doc, dry_run="All")
        except ApiException as exc:
            return str(exc.body)
        return ""

    message = eventually(lambda: "Service fraud-predictor already exists" in refusal() and refusal(), timeout=30,
                         what="the squatted Service named in the refusal")  # fmt: skip
    assert "no model owns it" in message
    core.delete_namespaced_service("fraud-predictor", namespace)
    served = serve(admin, namespace, attack_model, trusted)
    assert served.child["kind"] == "InferenceService"
