"""Objects the integration tests create: signed models, policies, evidence ConfigMaps, ModelDeployments."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.blobsign import sign_blob_with_key
from devmlops.adapters.oms import OmsVerifier
from devmlops.core.policy import Authority
from devmlops.harness.processes import ManagedProcess
from devmlops.harness.stack import DevmlopsStack
from tests.support.models import KeyFiles, make_key, make_model, sign_with_key

GROUP, VERSION = "devmlops.io", "v1alpha1"


@dataclass(frozen=True)
class SignedModel:
    key: KeyFiles
    bundle: str
    digest: str
    sbom: str
    sbom_signature: str


def signed_model(directory: Path, name: str = "fraud", files: dict[str, bytes] | None = None) -> SignedModel:
    """A model (``files``, or the default ones) signed with a key of its own, its SBOM and the SBOM's signature."""
    directory.mkdir(parents=True, exist_ok=True)
    key = make_key(directory, name)
    model = make_model(directory / name, files)
    bundle = sign_with_key(model, key, directory / f"{name}.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key.public_pem)).digest
    sbom = cyclonedx_sbom(name, digest)
    return SignedModel(key, bundle, digest, sbom, sign_blob_with_key(sbom.encode(), key.private.read_bytes()))


def cyclonedx_sbom(name: str, digest: str, license_id: str = "Apache-2.0") -> str:
    component = {
        "type": "machine-learning-model",
        "name": name,
        "version": "1.0.0",
        "hashes": [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}],
        "licenses": [{"license": {"id": license_id}}],
        "modelCard": {"modelParameters": {"task": "classification"}},
    }
    return json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": [component]})


def cluster_policy(name: str, namespace: str, *public_pems: str, **spec: Any) -> dict[str, Any]:
    """A policy that selects only ``namespace``, so tests sharing the cluster do not see each other's policies."""
    authorities = [{"name": f"key-{i}", "key": {"publicKey": pem}} for i, pem in enumerate(public_pems)]
    body: dict[str, Any] = {
        "selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        "authorities": authorities,
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterModelPolicy", "metadata": {"name": name}, "spec": body}


def evidence_config_map(name: str, namespace: str, data: dict[str, str], *, labelled: bool = True) -> dict[str, Any]:
    labels = {"devmlops.io/evidence": "true"} if labelled else {}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    }


def model_deployment(name: str, digest: str, *, uri: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": name, "uri": uri or f"s3://models/{name}", "format": "sklearn", "digest": digest},
        "runtime": {"kind": "kserve"},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}


def from_config_map(name: str, key: str) -> dict[str, Any]:
    return {"configMapKeyRef": {"name": name, "key": key}}


@contextmanager
def installed_policy(admin: k8s.ApiClient, stack: DevmlopsStack, policy: dict[str, Any]) -> Iterator[None]:
    """Create a ClusterModelPolicy, wait until the webhook compiled it, delete it afterwards."""
    api = k8s.CustomObjectsApi(admin)
    name = policy["metadata"]["name"]
    api.create_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", policy)
    stack.wait_for_policies(present=[name])
    try:
        yield
    finally:
        try:
            api.delete_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        stack.wait_for_policies(absent=[name])


@contextmanager
def trusting(
    admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel, *, policy: str, **spec: Any
) -> Iterator[dict[str, Any]]:
    """The usual setup: ``model``'s bundle in a labelled ConfigMap "evidence" (key model.sig) and a
    ClusterModelPolicy named ``policy`` that trusts its key for ``namespace`` (plus ``spec``); yields the policy."""
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        namespace, evidence_config_map("evidence", namespace, {"model.sig": model.bundle})
    )
    body = cluster_policy(policy[:63], namespace, model.key.public_pem, **spec)
    with installed_policy(admin, stack, body):
        yield body


def signed_by_evidence(name: str, model: SignedModel, **spec: Any) -> dict[str, Any]:
    """A ModelDeployment of ``model`` whose signature is the "evidence" ConfigMap's model.sig."""
    return model_deployment(name, model.digest, signature=from_config_map("evidence", "model.sig"), **spec)


@contextmanager
def operator_instead(stack: DevmlopsStack, name: str, **options: Any) -> Iterator[ManagedProcess]:
    """The shared cluster-wide operator swapped for ``stack.operator_process(name, **options)`` (a namespace, a
    Prometheus, a re-check interval), put back afterwards; the swapped one's last log lines are printed (pytest shows
    them when the test fails)."""
    assert stack.operator is not None
    stack.operator.stop()
    process = stack.operator_process(name, **options)
    try:
        yield process
    finally:
        process.stop()
        print("\n".join(process.log_text().splitlines()[-60:]))
        stack.start_operator()


def create_md(admin: k8s.ApiClient, namespace: str, doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Create a ModelDeployment; return what was stored and the warnings the API server passed on."""
    data, _status, headers = k8s.CustomObjectsApi(admin).create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, namespace, "modeldeployments", doc
    )
    raw = headers.get("Warning", "") if headers else ""
    return data, re.findall(r'299 - "((?:[^"\\]|\\.)*)"', raw)


def md_status(admin: k8s.ApiClient, namespace: str, name: str = "fraud") -> dict[str, Any]:
    """A ModelDeployment's status ({} before the operator wrote one)."""
    md = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
    return dict(md.get("status") or {})


def child_exists(admin: k8s.ApiClient, namespace: str, name: str) -> bool:
    """Whether the operator created the InferenceService ``name``."""
    try:
        k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name
        )
    except ApiException:
        return False
    return True


def eventually(probe: Callable[[], Any], *, timeout: float = 30.0, what: str) -> Any:
    """Poll ``probe`` until it returns something true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s")


def served_certificate(ca_file: Path, port: int) -> x509.Certificate:
    """The certificate the webhook on ``port`` serves now (verified against ``ca_file``)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
