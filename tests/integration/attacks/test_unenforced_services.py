"""Property 1b outside enforcement: a model's children are devmlops's guarantee in every namespace, and KServe's
predictor Service is one of them (the InferenceService's address).

Outside enforced namespaces the API server sent the webhook only Services that a ModelDeployment or an
InferenceService owns(ed). Mallory's Service under KServe's name, owned by nothing, never reached it, and KServe
keeps a Service it finds under its name when ports and selector match, whatever its type: the ExternalName
impostor of test_review_findings took the model's address in a namespace without the enforce label (this test
failed before: the impostor was created)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    SKLEARN_SERVER,
    cluster_serving_runtime,
    policy_name,
    serve,
    serving_runtime,
)
from tests.integration.attacks.test_review_findings import _impostor_service, _service, _swap_service
from tests.integration.support import SignedModel, eventually, trusting


def test_outside_enforcement_kserves_predictor_service_cannot_be_replaced_by_an_external_name_service(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    plain_namespace: str,
    attack_model: SignedModel,
    request: pytest.FixtureRequest,
) -> None:
    """Mallory deletes KServe's predictor Service of an admitted model in a namespace without the enforce label and
    creates her own under its name, ports and selector, of type ExternalName: refused, the name is the model's."""
    runtime = "atk-sklearn-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    with (
        trusting(
            admin,
            stack,
            plain_namespace,
            attack_model,
            policy=policy_name(plain_namespace),
            allow={"images": list(ALLOWED_IMAGES)},
        ) as policy,
        cluster_serving_runtime(admin, serving_runtime(runtime, SKLEARN_SERVER, kind="ClusterServingRuntime")),
    ):
        serve(admin, plain_namespace, attack_model, policy, runtime={"kind": "kserve", "servingRuntime": runtime})

        def predictor_service() -> dict[str, Any] | None:
            found = _service(admin, plain_namespace, "fraud-predictor")
            return found if found and (found["metadata"].get("ownerReferences") or []) else None

        real = eventually(predictor_service, timeout=60, what="KServe's predictor Service")
        assert "ModelDeployment fraud's Service" in _swap_service(mallory, plain_namespace, _impostor_service(real))
