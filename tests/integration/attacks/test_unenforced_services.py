"""Property 1b outside enforcement: a model's children are devmlops's guarantee in every namespace, and KServe's
predictor Service is one of them (the InferenceService's address).

Outside enforced namespaces the API server sent the webhook only Services that a ModelDeployment or an
InferenceService owns(ed). Mallory's Service under KServe's name, owned by nothing, never reached it, and KServe
keeps a Service it finds under its name when ports and selector match, whatever its type: the ExternalName
impostor of test_review_findings took the model's address in a namespace without the enforce label (this test
failed before: the impostor was created)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    SKLEARN_SERVER,
    admitted,
    cluster_serving_runtime,
    devmlops_denial,
    policy_name,
    serve,
    serving_runtime,
)
from tests.integration.attacks.test_review_findings import EXTERNAL, _impostor_service, _service, _swap_service
from tests.integration.support import GROUP, VERSION, SignedModel, eventually, signed_by_evidence, trusting


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


def test_outside_enforcement_a_service_squatting_a_models_address_before_the_model_exists_blocks_the_model(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    new_namespace: Callable[..., str],
    attack_model: SignedModel,
    request: pytest.FixtureRequest,
) -> None:
    """Mallory, in a namespace without the enforce label, creates fraud-predictor before anyone deploys "fraud":
    type ExternalName, with the very ports and selector KServe renders for a predictor named so (she reads them off
    any KServe model, here one in a second namespace). No model of that name exists, so the Service is admitted.
    KServe keeps a Service it finds under its name when ports and selector match, whatever its type, so the model
    deployed there next took her Service as its address, a CNAME to her host (this test failed before: the
    ModelDeployment was admitted, and KServe kept the impostor). Under enforcement such a ModelDeployment was
    already refused (test_review_findings); the check read the names in enforced namespaces only."""
    learned, squatted = new_namespace("learned", enforced=False), new_namespace("squatted", enforced=False)
    runtime = "atk-sklearn-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    allow = {"images": list(ALLOWED_IMAGES)}
    with (
        trusting(admin, stack, learned, attack_model, policy=policy_name(learned), allow=allow) as policy,
        trusting(admin, stack, squatted, attack_model, policy=policy_name(squatted), allow=allow),
        cluster_serving_runtime(admin, serving_runtime(runtime, SKLEARN_SERVER, kind="ClusterServingRuntime")),
    ):
        serve(admin, learned, attack_model, policy, runtime={"kind": "kserve", "servingRuntime": runtime})

        def predictor_service() -> dict[str, Any] | None:
            found = _service(admin, learned, "fraud-predictor")
            return found if found and (found["metadata"].get("ownerReferences") or []) else None

        impostor = _impostor_service(eventually(predictor_service, timeout=60, what="KServe's predictor Service"))
        admitted(k8s.CoreV1Api(mallory).create_namespaced_service, squatted, cast(Any, impostor))  # no fraud yet
        doc = signed_by_evidence("fraud", attack_model, runtime={"kind": "kserve", "servingRuntime": runtime})
        doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
        create = k8s.CustomObjectsApi(admin).create_namespaced_custom_object
        refusal = devmlops_denial(create, GROUP, VERSION, squatted, "modeldeployments", doc)
        if refusal is None:  # admitted: what KServe makes of the model's address
            time.sleep(10)  # KServe reconciles the new InferenceService within seconds
            kept = _service(admin, squatted, "fraud-predictor") or {}
            spec = kept.get("spec") or {}
            pytest.fail(
                f"the ModelDeployment was admitted under a squatted name; fraud-predictor is now type "
                f"{spec.get('type')} -> {spec.get('externalName')}, owned by "
                f"{kept.get('metadata', {}).get('ownerReferences')}",
                pytrace=False,
            )
        assert "Service fraud-predictor already exists" in refusal
        assert (_service(admin, squatted, "fraud-predictor") or {})["spec"]["externalName"] == EXTERNAL
