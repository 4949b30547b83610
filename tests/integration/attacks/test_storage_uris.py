"""The storage allow-list (``allow.storageUris``) attacked by a namespace editor (mallory): URIs fetched from
somewhere other than where they read.

A ClusterModelPolicy allows models only from ``https://models.example.com/prod/**`` (or the regional stores
``https://*.models.example.com/**``). The glob is matched on the URI as written, but the storage initializer fetches
it as its client reads it, and each case below was admitted before its fix though its fetch leaves the allowed
location. The bytes must still be signed, but the allow-list is a gate the asset names, and it no longer said where
they come from.

- Dot segments (bytes attack review): requests/urllib3 in kserve-storage and httpx remove them first (RFC 3986), and
  percent-encoded dots (``%2e%2e``) reach a server that decodes them before it resolves the path (nginx does).
- Dot segments with a path parameter (second attack round): Tomcat, and Spring and Jetty behind it, resolve ``..;``
  as ``..``.
- Variable references (pods and KServe reviews): the URI is an argument of the storage initializer's container (the
  Triton verifier's, KServe's), and the kubelet expands ``$(NAME)`` there from the container's environment (``$$``
  to ``$``); that environment holds ``DEVMLOPS_REGISTRY_AUTH`` from the Secret ``devmlops-registry-auth``, which
  mallory writes (``../staging/fraud.tgz``), so ``.../prod/$(DEVMLOPS_REGISTRY_AUTH)`` was fetched from ``/staging``.
- A host that ends early (gates review): ``*`` stays within a path segment but spans a ``?`` or ``#``, where every
  client ends the host, so ``https://*.models.example.com/**`` matched ``https://evil.example?.models.example.com/m``,
  fetched from ``evil.example``.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    TRITON,
    admitted,
    create_model_deployment,
    denied,
    policy_name,
)
from tests.integration.support import SignedModel, signed_by_evidence, trusting

PROD = "https://models.example.com/prod/**"
REGIONAL = "https://*.models.example.com/**"  # the company's regional model stores
KSERVE: dict[str, Any] = {"kind": "kserve"}
TRITON_RUNTIME = {"kind": "triton", "image": TRITON}

# name -> (the allowed glob, the attack's URI, the runtime: the pods review attacked the Triton verifier)
CASES = {
    "dot-segment": (PROD, "https://models.example.com/prod/../staging/fraud.tar.gz", KSERVE),
    "dot-segments": (PROD, "https://models.example.com/prod/./../staging/fraud.tar.gz", KSERVE),
    "encoded-dots": (PROD, "https://models.example.com/prod/%2e%2e/staging/fraud.tar.gz", KSERVE),
    "encoded-dot-upper-case": (PROD, "https://models.example.com/prod/%2E./staging/fraud.tar.gz", KSERVE),
    "encoded-slash": (PROD, "https://models.example.com/prod/..%2fstaging/fraud.tar.gz", KSERVE),
    "dot-segment-last": (PROD, "https://models.example.com/prod/..", KSERVE),
    "path-parameter": (PROD, "https://models.example.com/prod/..;/staging/fraud.tar.gz", KSERVE),
    "path-parameter-value": (PROD, "https://models.example.com/prod/..;jsessionid=1/staging/fraud.tar.gz", KSERVE),
    "encoded-path-parameter": (PROD, "https://models.example.com/prod/%2e%2e;/staging/fraud.tar.gz", KSERVE),
    "path-parameters": (PROD, "https://models.example.com/prod/x/.;/..;/..;/staging/fraud.tar.gz", KSERVE),
    "variable": (PROD, "https://models.example.com/prod/$(DEVMLOPS_REGISTRY_AUTH)", TRITON_RUNTIME),
    "variable-inside": (PROD, "https://models.example.com/prod/x/$(DEVMLOPS_REGISTRY_AUTH)/m.tgz", TRITON_RUNTIME),
    "variable-escaped": (PROD, "https://models.example.com/prod/$$(DEVMLOPS_REGISTRY_AUTH)", TRITON_RUNTIME),
    "variable-kserve-env": (PROD, "https://models.example.com/prod/$(S3_ENDPOINT)/fraud.tgz", KSERVE),
    "host-ends-at-query": (REGIONAL, "https://evil.example?.models.example.com/fraud.tar.gz", KSERVE),
    "host-ends-at-fragment": (REGIONAL, "https://evil.example#.models.example.com/fraud.tar.gz", KSERVE),
    "host-ends-after-port": (REGIONAL, "https://evil.example:443?.models.example.com/fraud.tar.gz", KSERVE),
}
CONTROLS = {PROD: "https://models.example.com/prod/fraud.tgz", REGIONAL: "https://eu.models.example.com/fraud.tar.gz"}


def _at(name: str, model: SignedModel, uri: str, runtime: dict[str, Any]) -> dict[str, Any]:
    doc = signed_by_evidence(name, model, runtime=dict(runtime))
    doc["spec"]["model"]["uri"] = uri
    return doc


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_uri_fetched_elsewhere_than_it_reads_matches_no_allowed_storage_location(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
    case: str,
) -> None:
    allowed, uri, runtime = CASES[case]
    namespace = enforced_namespace
    # What the variable cases expand to: the team's registry Secret is hers to write (by design).
    secret: Any = {"metadata": {"name": "devmlops-registry-auth"}, "stringData": {".dockerconfigjson": "../staging/m"}}
    admitted(k8s.CoreV1Api(mallory).create_namespaced_secret, namespace, secret)
    allow = {"images": list(ALLOWED_IMAGES), "storageUris": [allowed]}
    with trusting(admin, stack, namespace, attack_model, policy=policy_name(namespace), allow=allow):
        # Control: the same signed model from the allowed location, written plainly, is admitted.
        admitted(create_model_deployment, mallory, namespace, _at("fraud", attack_model, CONTROLS[allowed], runtime))
        attack = _at("fraud-elsewhere", attack_model, uri, runtime)
        message = denied(create_model_deployment, mallory, namespace, attack)
    assert f"spec.model.uri: got '{uri}'" in message, message
