"""Property 8 of docs/threat-model.md, the risk tier, attacked by a namespace editor (mallory).

The effective tier is the highest of the declared label ``devmlops.io/eu-ai-act-risk``, the tier the model's SBOM
states (SPDX 3 ``ai_safetyRiskAssessment``), and the tier a ClusterModelPolicy (or a team's ModelPolicy) assigns
by selector (``spec.compliance.minimumTier``). A label can raise the tier, never lower it; what the tier demands
(denial, approval) follows the effective tier everywhere: at admission, when an approval is given, where the
operator decides whether to serve.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from devmlops.adapters.blobsign import sign_blob_with_key
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import ALLOWED_IMAGES, admitted, denied
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    eventually,
    evidence_config_map,
    from_config_map,
    installed_policy,
    model_deployment,
    signed_model,
)

RISK_LABEL = "devmlops.io/eu-ai-act-risk"
APPROVERS = {"groups": ["devmlops:approvers"]}
TIERS = {"prohibited": {"deny": True}, "high": {"requireApproval": True, "requiredEvidence": []}}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("risk-tier"), "fraud")


def spdx3_sbom(name: str, digest: str, risk: str) -> str:
    """An SPDX 3 AI BOM of the model, bound to its digest, that states its safety risk assessment."""
    graph = [
        {"@id": "_:ci", "type": "CreationInfo", "specVersion": "3.0.1", "created": "2026-11-30T00:00:00Z"},
        {
            "type": "ai_AIPackage",
            "spdxId": f"https://example.com/{name}",
            "creationInfo": "_:ci",
            "name": name,
            "software_packageVersion": "1.0.0",
            "ai_safetyRiskAssessment": risk,
            "verifiedUsing": [{"type": "Hash", "algorithm": "sha256", "hashValue": digest.removeprefix("sha256:")}],
        },
    ]
    return json.dumps({"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": graph})


@pytest.fixture
def evidence(admin: k8s.ApiClient, enforced_namespace: str, model: SignedModel) -> str:
    """The model's signature, and a signed SBOM of it that states a high safety risk."""
    sbom = spdx3_sbom("fraud", model.digest, "high")
    data = {
        "model.sig": model.bundle,
        "sbom.json": sbom,
        "sbom.sig": sign_blob_with_key(sbom.encode(), model.key.private.read_bytes()),
    }
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        enforced_namespace, evidence_config_map("evidence", enforced_namespace, data)
    )
    return enforced_namespace


def policy_body(namespace: str, model: SignedModel, **compliance: Any) -> dict[str, Any]:
    rules = {"approvers": APPROVERS, "tiers": TIERS, **compliance}
    return cluster_policy(
        f"tier-{namespace}"[:63],
        namespace,
        model.key.public_pem,
        compliance=rules,
        allow={"images": ALLOWED_IMAGES},
    )


@pytest.fixture
def assigning_high(
    admin: k8s.ApiClient, stack: DevmlopsStack, evidence: str, model: SignedModel
) -> Iterator[dict[str, Any]]:
    """A ClusterModelPolicy that assigns every model of the namespace at least the tier high (approval needed)."""
    body = policy_body(evidence, model, minimumTier="high", requireRiskLabel=False)
    with installed_policy(admin, stack, body):
        yield body


def labelled(model: SignedModel, tier: str | None, **spec: Any) -> dict[str, Any]:
    doc = model_deployment("fraud", model.digest, signature=from_config_map("evidence", "model.sig"), **spec)
    if tier is not None:
        doc["metadata"]["labels"] = {RISK_LABEL: tier}
    return doc


def create(client: k8s.ApiClient, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        k8s.CustomObjectsApi(client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments", doc
        ),
    )


def status(admin: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    md = cast(
        dict[str, Any],
        k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments", "fraud"
        ),
    )
    return cast(dict[str, Any], md.get("status") or {})


def approve(client: k8s.ApiClient, namespace: str, digest: str) -> Any:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelApproval",
        "metadata": {"name": "bob-approves"},
        "spec": {"modelDeployment": "fraud", "digest": digest},
    }
    return k8s.CustomObjectsApi(client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelapprovals", body
    )


def waits_for_approval_then_is_served(admin: k8s.ApiClient, bob: k8s.ApiClient, namespace: str, digest: str) -> None:
    """Not served until a second person approves (the operator's decision), then served once bob did: the approval
    review, the operator and the webhook's serving stage all see the same effective tier."""
    phase = eventually(lambda: status(admin, namespace).get("phase"), what="the operator's decision")
    assert phase == "AwaitingApproval", status(admin, namespace)
    assert "child" not in status(admin, namespace)
    admitted(approve, bob, namespace, digest)
    eventually(lambda: status(admin, namespace).get("child"), what="the model served after the approval")


@pytest.mark.parametrize("tier", ["minimal", "limited", None], ids=["minimal", "limited", "no-label"])
def test_a_label_cannot_lower_the_tier_a_cluster_policy_assigns(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    bob: k8s.ApiClient,
    assigning_high: dict[str, Any],
    model: SignedModel,
    tier: str | None,
) -> None:
    namespace = assigning_high["spec"]["selector"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    admitted(create, mallory, namespace, labelled(model, tier))
    waits_for_approval_then_is_served(admin, bob, namespace, model.digest)


def test_a_prohibited_tier_assigned_by_the_cluster_policy_is_denied_whatever_the_label_says(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, stack: DevmlopsStack, evidence: str, model: SignedModel
) -> None:
    body = policy_body(evidence, model, minimumTier="prohibited")
    with installed_policy(admin, stack, body):
        message = denied(create, mallory, evidence, labelled(model, "minimal"))
    assert f"compliance gate (policy {body['metadata']['name']}): risk tier prohibited" in message
    assert "assigned by ClusterModelPolicy" in message


@pytest.mark.parametrize("tier", ["minimal", None], ids=["minimal", "no-label"])
def test_a_label_cannot_lower_the_tier_the_signed_sbom_states(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    bob: k8s.ApiClient,
    stack: DevmlopsStack,
    evidence: str,
    model: SignedModel,
    tier: str | None,
) -> None:
    body = policy_body(evidence, model, requireRiskLabel=False)
    body["spec"]["sbom"] = {"required": True, "requireSignature": True}
    with installed_policy(admin, stack, body):
        sbom = {
            "document": from_config_map("evidence", "sbom.json"),
            "signature": from_config_map("evidence", "sbom.sig"),
        }
        admitted(create, mallory, evidence, labelled(model, tier, sbom=sbom))
        waits_for_approval_then_is_served(admin, bob, evidence, model.digest)


def test_a_policy_that_requires_a_signed_sbom_requires_an_sbom(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, stack: DevmlopsStack, evidence: str, model: SignedModel
) -> None:
    # `required: false` beside `requireSignature: true`: before, mallory left the SBOM out, and with it the signed
    # SBOM's stated tier, and her `minimal` label was the model's tier.
    body = policy_body(evidence, model, requireRiskLabel=False)
    body["spec"]["sbom"] = {"required": False, "requireSignature": True}
    with installed_policy(admin, stack, body):
        message = denied(create, mallory, evidence, labelled(model, "minimal"))
    assert "spec.sbom is missing" in message
