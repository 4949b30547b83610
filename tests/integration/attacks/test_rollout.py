"""Property 15, a rollout serves only verified versions, split only as devmlops renders it: while a new version is
tried beside the stable one, the stable version's guard forwards exactly the share in the rollout status to the new
version's Service, and nothing a namespace editor can write changes where that share goes or which version the
status calls stable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.oms import OmsVerifier
from devmlops.core.policy import Authority
from tests.integration.attacks.conftest import (
    TRITON,
    Served,
    admitted,
    denied,
    forbidden_by_rbac,
    serve,
)
from tests.integration.support import GROUP, VERSION, SignedModel, eventually, from_config_map, signed_by_evidence
from tests.support.models import make_model, sign_with_key

GUARD = {"rateLimit": {"requestsPerSecond": 100, "burst": 100}, "protocol": "v2"}
ROLLOUT = {"strategy": "canary", "canary": {"trafficPercent": 10, "stepSeconds": 30, "readySeconds": 600}}


def _second_version(directory: Path, model: SignedModel) -> tuple[str, str]:
    """Other bytes signed by the same trusted key: (bundle, digest)."""
    files = {"weights.bin": b"\x02\x03" * 512, "config.json": b'{"layers": 3}'}
    bundle = sign_with_key(make_model(directory / "fraud", files), model.key, directory / "fraud.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=model.key.public_pem)).digest
    return bundle, digest


def _deployment(admin: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = k8s.AppsV1Api(admin).read_namespaced_deployment(name, namespace)
    except k8s.ApiException:
        return None
    return dict(k8s.ApiClient().sanitize_for_serialization(found))


@pytest.fixture
def rolling_out(
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
    tmp_path: Path,
) -> Served:
    """A guarded Triton model "fraud" with a gated rollout, and a second signed version being tried beside it (its
    Deployment and Service "fraud-canary"; it never becomes ready here, so the share stays 0)."""
    served = serve(admin, enforced_namespace, attack_model, trusted, runtime={"kind": "triton", "image": TRITON},
                   guard=GUARD, rollout=ROLLOUT)  # fmt: skip
    bundle, digest = _second_version(tmp_path, attack_model)
    k8s.CoreV1Api(admin).patch_namespaced_config_map("evidence", enforced_namespace, {"data": {"v2.sig": bundle}})
    patch = {"spec": {"model": {"digest": digest}, "signature": from_config_map("evidence", "v2.sig")}}
    custom = k8s.CustomObjectsApi(admin)
    admitted(custom.patch_namespaced_custom_object, GROUP, VERSION, enforced_namespace, "modeldeployments", "fraud",
             patch)  # fmt: skip
    eventually(
        lambda: _deployment(admin, enforced_namespace, "fraud-canary") and _service_selector(admin, enforced_namespace),
        timeout=120,
        what="the canary's Deployment and Service",
    )
    return served


def _guard_config(deployment: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    index = next(i for i, c in enumerate(containers) if c["name"] == "devmlops-guard")
    config = next(a for a in containers[index]["args"] if a.startswith("--config="))
    return index, json.loads(config.removeprefix("--config="))


def test_the_rollout_status_is_not_the_editors_to_write(
    mallory: k8s.ApiClient, rolling_out: Served, attack_model: SignedModel
) -> None:
    """The status names the stable version the webhook renders and decides; an editor may not write it (the chart's
    aggregated edit role grants modeldeployments, never their status)."""
    forged = {"status": {"rollout": {"phase": "RolledBack", "stableSpec": {"model": {"digest": "sha256:" + "6" * 64}}}}}
    forbidden_by_rbac(
        k8s.CustomObjectsApi(mallory).patch_namespaced_custom_object_status,
        GROUP, VERSION, rolling_out.namespace, "modeldeployments", "fraud", forged,
    )  # fmt: skip


def test_a_status_sent_with_a_create_or_an_update_is_not_stored(
    mallory: k8s.ApiClient, rolling_out: Served, attack_model: SignedModel
) -> None:
    """Nor can the status come in through the main resource: the API server drops a status sent with a create and
    ignores one sent with an update (the CRD has a status subresource), so the operator's record stands."""
    namespace = rolling_out.namespace
    forged = {"rollout": {"phase": "RolledBack", "stableSpec": {"model": {"digest": "sha256:" + "6" * 64}}}}
    custom = k8s.CustomObjectsApi(mallory)
    doc = signed_by_evidence("fraud-b", attack_model, runtime={"kind": "triton", "image": TRITON}, guard=GUARD,
                             rollout=ROLLOUT)  # fmt: skip
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    made = admitted(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, "modeldeployments",
                    {**doc, "status": forged}, dry_run="All")  # fmt: skip
    assert "status" not in made
    before = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "fraud")["status"]
    admitted(custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, "modeldeployments", "fraud",
             {"status": forged})  # fmt: skip
    after = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "fraud")["status"]
    assert after["rollout"]["stableDigest"] == before["rollout"]["stableDigest"]
    assert after["rollout"].get("stableSpec", {}).get("model", {}).get("digest") != "sha256:" + "6" * 64


def test_the_stable_guard_cannot_be_made_to_send_a_share_elsewhere(admin: k8s.ApiClient, mallory: k8s.ApiClient,
                                                                   rolling_out: Served) -> None:  # fmt: skip
    stable = _deployment(admin, rolling_out.namespace, "fraud")
    assert stable is not None
    index, config = _guard_config(stable)
    config["split"] = {"upstream": "http://mallory.example.com:8000", "weight": 99}
    args = [a for a in stable["spec"]["template"]["spec"]["containers"][index]["args"] if not a.startswith("--config=")]
    patch = [{"op": "replace", "path": f"/spec/template/spec/containers/{index}/args",
              "value": [*args, "--config=" + json.dumps(config)]}]  # fmt: skip
    message = denied(k8s.AppsV1Api(mallory).patch_namespaced_deployment, "fraud", rolling_out.namespace, patch)
    assert "differs from what devmlops renders" in message or "only the devmlops operator" in message


def test_no_service_but_the_canary_one_may_take_the_canary_address(admin: k8s.ApiClient, mallory: k8s.ApiClient,
                                                                   rolling_out: Served) -> None:  # fmt: skip
    """The stable guard forwards the share to http://fraud-canary.<namespace>.svc: whoever owned that name would get
    the traffic. Deleting the operator's Service (which would free its ClusterIP too) and putting an ExternalName one in
    its place are denied."""
    core = k8s.CoreV1Api(mallory)
    assert "fraud-canary" in denied(core.delete_namespaced_service, "fraud-canary", rolling_out.namespace)
    impostor = {
        "metadata": {"name": "fraud-canary"},
        "spec": {"type": "ExternalName", "externalName": "mallory.example.com"},
    }
    message = denied(core.create_namespaced_service, rolling_out.namespace, impostor)
    assert "fraud-canary" in message
    # And the operator writes its own Service again (its deletion is a child gone: repaired within seconds).
    eventually(
        lambda: _service_selector(admin, rolling_out.namespace) == {"devmlops.io/canary-of": "fraud"},
        timeout=30,
        what="the canary Service written again",
    )


def _service_selector(admin: k8s.ApiClient, namespace: str) -> dict[str, str] | None:
    try:
        return dict(k8s.CoreV1Api(admin).read_namespaced_service("fraud-canary", namespace).spec.selector or {})
    except k8s.ApiException:
        return None


def test_dropping_the_rollout_from_the_spec_leaves_no_unrendered_model_server(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, rolling_out: Served
) -> None:
    """Mid-rollout, an editor removes spec.rollout: the ModelDeployment now renders its own Deployment and Service only,
    so the new version's "fraud-canary" Deployment and Service are no longer devmlops's rendering and must go. Were
    they kept (found in review: the operator looked for them only while the spec asked for a rollout), a model server
    nothing renders would run on, beyond revocation (a revoked model scales only the child its status names)."""
    namespace = rolling_out.namespace
    patch = {"spec": {"rollout": None}}
    admitted(k8s.CustomObjectsApi(mallory).patch_namespaced_custom_object, GROUP, VERSION, namespace,
             "modeldeployments", "fraud", patch)  # fmt: skip
    eventually(
        lambda: _deployment(admin, namespace, "fraud-canary") is None and _service_selector(admin, namespace) is None,
        timeout=30,
        what="the new version's Deployment and Service removed once no rollout renders them",
    )
    # And the status no longer records a rollout (nothing renders from it any more).
    custom = k8s.CustomObjectsApi(admin)

    def stored_status() -> dict[str, Any]:
        found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "fraud")
        return dict(found.get("status") or {})

    eventually(lambda: "rollout" not in stored_status(), timeout=30, what="status.rollout removed")


def test_no_model_deployment_may_take_the_name_of_another_ones_new_version(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, rolling_out: Served, attack_model: SignedModel
) -> None:
    """A ModelDeployment named "fraud-canary" renders a Deployment and a Service under the very names of fraud's new
    version: its operator would replace fraud's canary Service (the owner it finds decides nothing), and the stable
    guard's share of fraud's traffic would reach whatever signed model the editor chose, unanalysed and unapproved for
    fraud (and fraud's operator would delete that ModelDeployment's children once its rollout ends). Refused at
    create, naming the clash; the same ModelDeployment under another name is admitted (the control)."""
    namespace = rolling_out.namespace
    create = k8s.CustomObjectsApi(mallory).create_namespaced_custom_object
    doc = signed_by_evidence("fraud-canary", attack_model, runtime={"kind": "triton", "image": TRITON}, guard=GUARD)
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    doc["spec"]["model"]["name"] = "fraud"  # the name the signature covers
    message = denied(create, GROUP, VERSION, namespace, "modeldeployments", doc)
    assert "the name fraud-canary" in message
    assert "ModelDeployment fraud's new version" in message
    doc["metadata"]["name"] = "fraud-b"
    admitted(create, GROUP, VERSION, namespace, "modeldeployments", doc, dry_run="All")
