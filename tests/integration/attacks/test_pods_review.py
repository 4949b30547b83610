"""The Pods of a model server's chain attacked by a namespace editor (mallory): pods and workloads review.

What a model server's Pod runs is compared with devmlops's rendering field by field, but the kubelet does one more
thing with a container's ``command`` and ``args`` when it starts it: it expands every ``$(NAME)`` that names a
variable of the container's environment (and turns ``$$`` into ``$``). The storage initializer's arguments carry the
model's URI as mallory wrote it, and its environment carries ``DEVMLOPS_REGISTRY_AUTH`` from the Secret
``devmlops-registry-auth`` of the model's namespace (core/render.py), which she writes. So
``https://models.example.com/prod/$(DEVMLOPS_REGISTRY_AUTH)`` matched ``https://models.example.com/prod/**`` as
written, and the initializer fetched ``/prod/`` followed by whatever her Secret says (``../staging/fraud.tar.gz``:
the client removes the dot segments), a location no policy allows; the dot-segment rule of the bytes review
(``test_storage_uris.py``) never saw a dot. The bytes must still be signed; the allow-list is the gate that says
where they come from.
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

ALLOWED = "https://models.example.com/prod/**"
REGISTRY_SECRET = "devmlops-registry-auth"  # core/render.py: the storage initializer's DEVMLOPS_REGISTRY_AUTH


def _at(name: str, model: SignedModel, uri: str) -> dict[str, Any]:
    doc = signed_by_evidence(name, model, runtime={"kind": "triton", "image": TRITON})
    doc["spec"]["model"]["uri"] = uri
    return doc


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example.com/prod/$(DEVMLOPS_REGISTRY_AUTH)",
        "https://models.example.com/prod/x/$(DEVMLOPS_REGISTRY_AUTH)/fraud.tar.gz",
        "https://models.example.com/prod/$$(DEVMLOPS_REGISTRY_AUTH)",  # written as one thing, fetched as another
    ],
)
def test_a_variable_reference_in_a_storage_uri_does_not_walk_out_of_an_allowed_location(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
    uri: str,
) -> None:
    namespace = enforced_namespace
    secret: Any = {"metadata": {"name": REGISTRY_SECRET}, "stringData": {".dockerconfigjson": "../staging/fraud.tgz"}}
    admitted(k8s.CoreV1Api(mallory).create_namespaced_secret, namespace, secret)  # hers to write (by design)
    allow = {"images": list(ALLOWED_IMAGES), "storageUris": [ALLOWED]}
    with trusting(admin, stack, namespace, attack_model, policy=policy_name(namespace), allow=allow):
        # Control: the same signed model from the allowed location, written plainly, is admitted.
        admitted(create_model_deployment, mallory, namespace, _at("fraud", attack_model, ALLOWED[:-2] + "fraud.tgz"))
        message = denied(create_model_deployment, mallory, namespace, _at("fraud-staging", attack_model, uri))
        assert "spec.model.uri" in message, message
