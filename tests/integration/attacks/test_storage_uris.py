"""The storage allow-list (``allow.storageUris``) attacked by a namespace editor (mallory), bytes attack review.

A ClusterModelPolicy allows models only from ``https://models.example.com/prod/**``. The glob is matched on the URI
as written, but the clients that fetch it (requests/urllib3 in kserve-storage, httpx) remove dot segments first
(RFC 3986): ``https://models.example.com/prod/../staging/fraud.tar.gz`` matched the glob and the storage initializer
fetched ``/staging/fraud.tar.gz``, a location no policy allows; percent-encoded dots (``%2e%2e``) reach a server that
decodes them before it resolves the path (nginx does). The bytes must still be signed, but the allow-list is a gate
the asset names, and it no longer said where they come from.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    admitted,
    create_model_deployment,
    denied,
    policy_name,
)
from tests.integration.support import SignedModel, signed_by_evidence, trusting

ALLOWED = "https://models.example.com/prod/**"


def _at(name: str, model: SignedModel, uri: str) -> dict[str, Any]:
    doc = signed_by_evidence(name, model)
    doc["spec"]["model"]["uri"] = uri
    return doc


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example.com/prod/../staging/fraud.tar.gz",
        "https://models.example.com/prod/./../staging/fraud.tar.gz",
        "https://models.example.com/prod/%2e%2e/staging/fraud.tar.gz",
        "https://models.example.com/prod/%2E./staging/fraud.tar.gz",
        "https://models.example.com/prod/..%2fstaging/fraud.tar.gz",
        "https://models.example.com/prod/..",
    ],
)
def test_a_dot_segment_does_not_walk_out_of_an_allowed_storage_location(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
    uri: str,
) -> None:
    namespace = enforced_namespace
    allow = {"images": list(ALLOWED_IMAGES), "storageUris": [ALLOWED]}
    with trusting(admin, stack, namespace, attack_model, policy=policy_name(namespace), allow=allow):
        # Control: the same signed model from the allowed location is admitted.
        admitted(create_model_deployment, mallory, namespace, _at("fraud", attack_model, ALLOWED[:-2] + "fraud.tgz"))
        message = denied(create_model_deployment, mallory, namespace, _at("fraud-staging", attack_model, uri))
        assert "spec.model.uri" in message, message
