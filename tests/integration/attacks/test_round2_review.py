"""Second attack round over the gates review and the pods review (four eyes by SubjectAccessReview, the storage
allow-list's refused URI forms), each through the real API server as ``mallory``, a namespace editor.

1. A path parameter after a dot segment: ``allow.storageUris`` refused ``.`` and ``..`` segments (written or
   percent-encoded) but not ``..;`` or ``.;``. Clients send them as written; servers that take path parameters off a
   segment before resolving it (Tomcat, and Spring and Jetty behind it) resolve ``/prod/..;/staging/m`` as
   ``/staging/m``. ``https://models.example.com/prod/..;/staging/fraud.tar.gz`` matched
   ``https://models.example.com/prod/**`` and was admitted (the gates review listed it as a residual risk, not closed).
   Only the admission is shown here: no such server runs in the attack tests.
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
        "https://models.example.com/prod/..;/staging/fraud.tar.gz",
        "https://models.example.com/prod/..;jsessionid=1/staging/fraud.tar.gz",
        "https://models.example.com/prod/%2e%2e;/staging/fraud.tar.gz",
        "https://models.example.com/prod/x/.;/..;/..;/staging/fraud.tar.gz",
    ],
)
def test_a_path_parameter_after_a_dot_segment_does_not_walk_out_of_an_allowed_location(
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
        # Control: the same signed model from the allowed location, written plainly, is admitted.
        admitted(create_model_deployment, mallory, namespace, _at("fraud", attack_model, ALLOWED[:-2] + "fraud.tgz"))
        message = denied(create_model_deployment, mallory, namespace, _at("fraud-staging", attack_model, uri))
        assert "spec.model.uri" in message, message
