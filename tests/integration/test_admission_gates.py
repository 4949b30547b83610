"""The gates through the real API server: evidence in ConfigMaps and Secrets, policies as ClusterModelPolicy
objects, exact denials, warn mode, and policy changes that take effect without restarting the webhook."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import denial_message
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    create_md,
    cyclonedx_sbom,
    evidence_config_map,
    from_config_map,
    installed_policy,
    model_deployment,
    signed_model,
)

PREFIX = 'admission webhook "modeldeployments.validate.devmlops.io" denied the request: denied by devmlops: '


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("gates"), "fraud")


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("rogue"), "fraud")


@pytest.fixture
def evidence(admin: k8s.ApiClient, namespace: str, model: SignedModel, rogue: SignedModel) -> str:
    data = {
        "model.sig": model.bundle,
        "rogue.sig": rogue.bundle,
        "sbom.json": model.sbom,
        "sbom.sig": model.sbom_signature,
        "other-sbom.json": cyclonedx_sbom("fraud", "sha256:" + "0" * 64),
    }
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_config_map(namespace, evidence_config_map("evidence", namespace, data))
    core.create_namespaced_config_map(namespace, evidence_config_map("unlabelled", namespace, data, labelled=False))
    return namespace


def denied(admin: k8s.ApiClient, namespace: str, doc: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        create_md(admin, namespace, doc)
    assert caught.value.status == 403, denial_message(caught.value)
    return denial_message(caught.value)


def signed(name: str, model: SignedModel, key: str = "model.sig", **spec: Any) -> dict[str, Any]:
    return model_deployment(name, model.digest, signature=from_config_map("evidence", key), **spec)


@pytest.fixture
def policy(admin: k8s.ApiClient, stack: DevmlopsStack, evidence: str, model: SignedModel) -> Iterator[str]:
    name = f"gates-{evidence}"[:63]
    spec = {
        "sbom": {"required": True, "formats": ["cyclonedx"], "deniedLicenses": ["AGPL-3.0-only"]},
        "allow": {"storageUris": ["s3://models/**"]},
    }
    with installed_policy(admin, stack, cluster_policy(name, evidence, model.key.public_pem, **spec)):
        yield name


def with_sbom(document: str = "sbom.json", signature: str | None = None) -> dict[str, Any]:
    sbom: dict[str, Any] = {"document": from_config_map("evidence", document)}
    if signature:
        sbom["signature"] = from_config_map("evidence", signature)
    return sbom


def test_a_model_signed_by_the_trusted_key_with_a_bound_sbom_from_a_configmap_is_admitted(
    admin: k8s.ApiClient, namespace: str, policy: str, model: SignedModel
) -> None:
    stored, warnings = create_md(admin, namespace, signed("fraud", model, sbom=with_sbom(signature="sbom.sig")))
    assert stored["metadata"]["name"] == "fraud"
    assert warnings == []


def test_a_signature_from_a_secret_is_read_too(
    admin: k8s.ApiClient, namespace: str, policy: str, model: SignedModel
) -> None:
    secret = {
        "metadata": {"name": "sig", "labels": {"devmlops.io/evidence": "true"}},
        "data": {"model.sig": base64.b64encode(model.bundle.encode()).decode()},
    }
    k8s.CoreV1Api(admin).create_namespaced_secret(namespace, secret)
    doc = model_deployment(
        "fraud", model.digest, signature={"secretKeyRef": {"name": "sig", "key": "model.sig"}}, sbom=with_sbom()
    )
    assert create_md(admin, namespace, doc)[0]["metadata"]["name"] == "fraud"


def test_a_rogue_signer_is_denied_with_the_exact_reason(
    admin: k8s.ApiClient, namespace: str, policy: str, rogue: SignedModel
) -> None:
    message = denied(admin, namespace, signed("fraud", rogue, "rogue.sig", sbom=with_sbom()))
    assert message.startswith(
        PREFIX + f"signature gate (policy {policy}): got 0 verified authorities (key-0: signature rejected: "
        "Key mismatch: The public key hash in the signature's verification material does not match the provided "
        "public key.), expected one of: key-0 (EC public key); fix: sign with a key or identity that the policy's "
        "authorities trust"
    )


def test_a_digest_the_signature_does_not_cover_is_denied(
    admin: k8s.ApiClient, namespace: str, policy: str, model: SignedModel
) -> None:
    other = "sha256:" + "1" * 64
    message = denied(
        admin,
        namespace,
        model_deployment("fraud", other, signature=from_config_map("evidence", "model.sig"), sbom=with_sbom()),
    )
    assert (
        PREFIX + f"signature gate (policy {policy}): spec.model.digest: got sha256:111111111111..., but bundle 0 "
        f"verified for key-0 but signs {model.digest[:19]}... (model 'fraud')"
    ) in message


def test_an_sbom_for_other_weights_is_denied(
    admin: k8s.ApiClient, namespace: str, policy: str, model: SignedModel
) -> None:
    message = denied(admin, namespace, signed("fraud", model, sbom=with_sbom("other-sbom.json")))
    assert f"sbom gate (policy {policy}): SBOM binding: got model component(s) fraud" in message


def test_evidence_in_an_unlabelled_configmap_is_not_read(
    admin: k8s.ApiClient, namespace: str, policy: str, model: SignedModel
) -> None:
    doc = model_deployment("fraud", model.digest, signature=from_config_map("unlabelled", "model.sig"))
    message = denied(admin, namespace, doc)
    assert f"ConfigMap {namespace}/unlabelled not found among ConfigMaps labelled devmlops.io/evidence=true" in message


def test_a_storage_uri_outside_the_allow_list_is_denied(
    admin: k8s.ApiClient, namespace: str, policy: str, model: SignedModel
) -> None:
    message = denied(admin, namespace, signed("fraud", model, sbom=with_sbom(), uri="s3://scratch/fraud"))
    assert f"allowlist gate (policy {policy}): spec.model.uri: got 's3://scratch/fraud'" in message


def test_a_namespace_no_policy_selects_is_denied_by_default(
    admin: k8s.ApiClient, evidence: str, model: SignedModel
) -> None:
    message = denied(admin, evidence, signed("fraud", model))
    assert message == PREFIX + (
        f"policy gate: no ClusterModelPolicy selects model 'fraud' in namespace '{evidence}'; nothing matched means "
        "deny; fix: ask the platform team for a ClusterModelPolicy that selects this namespace and model"
    )


def test_warn_mode_admits_and_the_client_receives_the_warnings(
    admin: k8s.ApiClient, stack: DevmlopsStack, evidence: str, model: SignedModel, rogue: SignedModel
) -> None:
    name = f"warn-{evidence}"[:63]
    with installed_policy(admin, stack, cluster_policy(name, evidence, model.key.public_pem, mode="warn")):
        stored, warnings = create_md(admin, evidence, signed("fraud", rogue, "rogue.sig"))
    assert stored["metadata"]["name"] == "fraud"
    assert len(warnings) == 1
    assert warnings[0].startswith(f"signature gate (policy {name}): got 0 verified authorities")


def test_a_policy_change_takes_effect_without_restarting_the_webhook(
    admin: k8s.ApiClient, stack: DevmlopsStack, evidence: str, model: SignedModel, rogue: SignedModel
) -> None:
    assert stack.webhook is not None
    pid = stack.webhook.pid
    name = f"live-{evidence}"[:63]
    api = k8s.CustomObjectsApi(admin)
    with installed_policy(admin, stack, cluster_policy(name, evidence, model.key.public_pem)):
        assert "got 0 verified authorities" in denied(admin, evidence, signed("fraud", rogue, "rogue.sig"))
        before = stack.webhook_status()["policyRevision"]
        current = api.get_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", name)
        current["spec"]["authorities"].append({"name": "rogue-key", "key": {"publicKey": rogue.key.public_pem}})
        api.replace_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", name, current)
        stack.wait_for_policies(present=[name], revision_not=before)
        assert create_md(admin, evidence, signed("fraud", rogue, "rogue.sig"))[0]["metadata"]["name"] == "fraud"
    assert stack.webhook.pid == pid


def test_a_policy_that_cannot_compile_is_refused_with_the_field(
    admin: k8s.ApiClient, stack: DevmlopsStack, model: SignedModel
) -> None:
    bad = cluster_policy("impossible-threshold", "nowhere", model.key.public_pem, threshold=2)
    with pytest.raises(ApiException) as caught:
        k8s.CustomObjectsApi(admin).create_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", bad)
    assert caught.value.status == 403
    assert "spec.threshold: got 2, expected 1 to 1 (the number of authorities)" in denial_message(caught.value)


def test_the_webhook_counts_decisions_and_cache_hits_in_its_metrics(
    admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, policy: str, model: SignedModel, tmp_path: Path
) -> None:
    for index in range(3):
        create_md(admin, namespace, signed(f"fraud-{index}", model, sbom=with_sbom()))
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with urllib.request.urlopen(f"{stack.webhook_url}/metrics", context=context, timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    hits = next(
        line for line in text.splitlines() if line.startswith('devmlops_verification_cache_events_total{event="hit"}')
    )
    assert float(hits.split()[-1]) >= 2
    assert 'devmlops_admission_requests_total{allowed="true",kind="ModelDeployment"' in text
