"""The real API server accepts our CRDs and enforces their schemas (no webhook involved here)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import denial_message
from devmlops.harness.controlplane import load_yaml_documents

DIGEST = "sha256:" + "3c" * 32
VALID_MD: dict[str, Any] = {
    "apiVersion": "devmlops.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "schema-check"},
    "spec": {
        "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST, "format": "sklearn"},
        "runtime": {"kind": "kserve"},
        "signature": {"inline": "{}"},
    },
}
VALID_POLICY: dict[str, Any] = {
    "apiVersion": "devmlops.io/v1alpha1",
    "kind": "ClusterModelPolicy",
    "metadata": {"name": "schema-check"},
    "spec": {"authorities": [{"name": "release-key", "key": {"publicKey": "-----BEGIN PUBLIC KEY-----"}}]},
}


def with_spec(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = doc["spec"]
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf)
    else:
        node[leaf] = value
    return doc


# The webhook excludes its own namespace, so objects there meet only the API server's schema validation (and, for
# KServe's kinds, KServe's own webhooks).
SCHEMA_ONLY_NAMESPACE = "devmlops-system"


@pytest.fixture(autouse=True)
def schema_only_namespace(admin: k8s.ApiClient) -> None:
    try:
        k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": SCHEMA_ONLY_NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def dry_run_md(api: k8s.CustomObjectsApi, doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = api.create_namespaced_custom_object(
        "devmlops.io", "v1alpha1", SCHEMA_ONLY_NAMESPACE, "modeldeployments", doc, dry_run="All"
    )
    return result


def test_every_crd_is_established_with_its_short_names_and_printer_columns(admin: k8s.ApiClient) -> None:
    api = k8s.ApiextensionsV1Api(admin)
    crds = {crd.metadata.name: crd for crd in api.list_custom_resource_definition().items}
    assert {
        "modeldeployments.devmlops.io",
        "clustermodelpolicies.devmlops.io",
        "inferenceservices.serving.kserve.io",
        "servingruntimes.serving.kserve.io",
        "clusterservingruntimes.serving.kserve.io",
    } <= set(crds)
    md = crds["modeldeployments.devmlops.io"]
    assert md.spec.names.short_names == ["md"]
    assert md.spec.scope == "Namespaced"
    version = md.spec.versions[0]
    assert version.subresources.status is not None
    assert [c.name for c in version.additional_printer_columns][:4] == [
        "Model",
        "Version",
        "Runtime",
        "Phase",
    ]
    assert crds["clustermodelpolicies.devmlops.io"].spec.scope == "Cluster"


def test_a_valid_model_deployment_is_stored_with_schema_defaults(admin: k8s.ApiClient) -> None:
    stored = dry_run_md(k8s.CustomObjectsApi(admin), VALID_MD)
    assert stored["spec"]["runtime"]["replicas"] == 1


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("model.digest", "md5:abc", "spec.model.digest"),
        ("model.digest", "sha256:" + "A" * 64, "spec.model.digest"),
        ("model.uri", "ftp://models/fraud", "spec.model.uri"),
        ("model.name", None, "spec.model.name: Required value"),
        ("runtime.kind", "torchserve", 'spec.runtime.kind: Unsupported value: "torchserve"'),
        ("runtime.replicas", -1, "spec.runtime.replicas"),
        ("runtime", {"kind": "triton", "image": "nvcr.io/nvidia/tritonserver:24.01-py3"}, "pinned by digest"),
        ("signature", {"inline": "{}", "configMapKeyRef": {"name": "a", "key": "b"}}, "set exactly one of"),
        (
            "signature",
            {"configMapKeyRef": {"name": "a"}},
            "spec.signature.configMapKeyRef.key: Required value",
        ),
        ("rollout", {"strategy": "canary"}, "rollout.canary is required"),
        ("rollout", {"strategy": "canary", "canary": {"trafficPercent": 100}}, "trafficPercent"),
    ],
)
def test_a_model_deployment_that_breaks_the_schema_is_rejected_naming_the_field(
    admin: k8s.ApiClient, path: str, value: Any, complaint: str
) -> None:
    with pytest.raises(ApiException) as caught:
        dry_run_md(k8s.CustomObjectsApi(admin), with_spec(VALID_MD, path, value))
    assert caught.value.status == 422
    assert complaint in denial_message(caught.value)


def test_a_triton_runtime_pinned_by_digest_is_accepted(admin: k8s.ApiClient) -> None:
    image = "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64
    doc = with_spec(VALID_MD, "runtime", {"kind": "triton", "image": image})
    assert dry_run_md(k8s.CustomObjectsApi(admin), doc)["spec"]["runtime"]["image"] == image


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("authorities", [], "spec.authorities"),
        ("authorities", [{"name": "x"}], "set exactly one of key, certificateChain or keyless"),
        ("authorities", [{"name": "x", "keyless": {"issuer": "https://i"}}], "set exactly one of identity"),
        ("mode", "audit", 'spec.mode: Unsupported value: "audit"'),
        ("threshold", 0, "spec.threshold"),
        ("rego.packages", ["Not-A-Package"], "spec.rego.packages[0]"),
    ],
)
def test_a_cluster_model_policy_that_breaks_the_schema_is_rejected(
    admin: k8s.ApiClient, path: str, value: Any, complaint: str
) -> None:
    api = k8s.CustomObjectsApi(admin)
    with pytest.raises(ApiException) as caught:
        api.create_cluster_custom_object(
            "devmlops.io",
            "v1alpha1",
            "clustermodelpolicies",
            with_spec(VALID_POLICY, path, value),
            dry_run="All",
        )
    assert caught.value.status == 422
    assert complaint in denial_message(caught.value)


def test_a_valid_cluster_model_policy_defaults_to_enforce(admin: k8s.ApiClient) -> None:
    stored = k8s.CustomObjectsApi(admin).create_cluster_custom_object(
        "devmlops.io", "v1alpha1", "clustermodelpolicies", VALID_POLICY, dry_run="All"
    )
    assert stored["spec"]["mode"] == "enforce"
    assert stored["spec"]["threshold"] == 1


def test_kserve_stores_an_inference_service_with_its_own_defaults_filled_in(admin: k8s.ApiClient) -> None:
    # KServe's full CRDs and its defaulting webhook (the stub CRDs kept objects as written): what devmlops compares
    # a stored InferenceService against must expect these fields.
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "sklearn-iris"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://kfserving/iris"}}},
    }
    stored = k8s.CustomObjectsApi(admin).create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", SCHEMA_ONLY_NAMESPACE, "inferenceservices", isvc, dry_run="All"
    )
    assert stored["spec"] == {
        "predictor": {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "name": "",
                "resources": {},
                "storageUri": "gs://kfserving/iris",
            }
        }
    }
    assert stored["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Standard"}


def _storage_uris(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(v) for k, v in node.items() if k == "storageUri"] + [
            uri for v in node.values() for uri in _storage_uris(v)
        ]
    if isinstance(node, list):
        return [uri for item in node for uri in _storage_uris(item)]
    return []


def test_kserves_own_sample_inference_services_are_accepted_with_their_storage_uris_kept(
    admin: k8s.ApiClient, shared_fixtures: Path
) -> None:
    # KServe's defaulter rewrites the older framework form (predictor.sklearn, predictor.triton) into
    # predictor.model; the storage URI, which devmlops binds to the signed model, stays.
    samples = sorted((shared_fixtures / "kserve" / "docs" / "samples").glob("**/*.yaml"))
    assert samples, "the kserve fixture folder holds no samples"
    api = k8s.CustomObjectsApi(admin)
    for sample in samples:
        for doc in load_yaml_documents(sample):
            if doc.get("kind") != "InferenceService":
                continue
            group, version = doc["apiVersion"].split("/")
            stored = api.create_namespaced_custom_object(
                group, version, SCHEMA_ONLY_NAMESPACE, "inferenceservices", doc, dry_run="All"
            )
            assert "model" in stored["spec"]["predictor"], sample
            assert _storage_uris(stored["spec"]) == _storage_uris(doc["spec"]), sample
