"""Property 5 of docs/threat-model.md, team policies only narrow, attacked by a namespace editor (mallory).

A ModelPolicy applies only to models that a ClusterModelPolicy selects and only adds requirements: a model that no
ClusterModelPolicy selects gets the no-match action whatever ModelPolicies say, and a ModelPolicy can neither drop
nor replace what a ClusterModelPolicy demands (its signers, its SBOM, its approval, its tier).
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from kubernetes import client as k8s

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


@pytest.fixture(scope="module")
def platform_model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    """The model the platform team's key signed."""
    return signed_model(tmp_path_factory.mktemp("team-platform"), "fraud")


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    """Mallory's model, signed with a key she made herself."""
    return signed_model(tmp_path_factory.mktemp("team-own"), "shadow")


def platform_policy(name: str, namespace: str, model: SignedModel, **spec: Any) -> dict[str, Any]:
    """A ClusterModelPolicy for ``namespace`` trusting ``model``'s key, with the suite's images allow-listed."""
    return cluster_policy(name[:63], namespace, model.key.public_pem, **{"allow": {"images": ALLOWED_IMAGES}, **spec})


def team_policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelPolicy", "metadata": {"name": name}, "spec": spec}


def trusting_own_key(own: SignedModel) -> dict[str, Any]:
    return team_policy("ours", authorities=[{"name": "mallory", "key": {"publicKey": own.key.public_pem}}])


def plant(client: k8s.ApiClient, stack: DevmlopsStack, namespace: str, policy: dict[str, Any]) -> None:
    """Create a ModelPolicy as ``client`` and wait until the webhook compiled it (so that it could take effect)."""
    admitted(
        k8s.CustomObjectsApi(client).create_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "modelpolicies",
        policy,
    )
    stack.wait_for_policies(present=[f"{namespace}/{policy['metadata']['name']}"])


def evidence(client: k8s.ApiClient, namespace: str, **data: str) -> None:
    k8s.CoreV1Api(client).create_namespaced_config_map(namespace, evidence_config_map("evidence", namespace, data))


def create(client: k8s.ApiClient, namespace: str, doc: dict[str, Any]) -> Any:
    plural = "modelpolicies" if doc["kind"] == "ModelPolicy" else "modeldeployments"
    return k8s.CustomObjectsApi(client).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, doc)


def own_model(own: SignedModel, name: str = "shadow") -> dict[str, Any]:
    return model_deployment(name, own.digest, signature=from_config_map("evidence", "own.sig"))


def status(admin: k8s.ApiClient, namespace: str, name: str = "fraud") -> dict[str, Any]:
    md = cast(
        dict[str, Any],
        k8s.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name),
    )
    return cast(dict[str, Any], md.get("status") or {})


def test_a_team_policy_trusting_the_attackers_key_admits_nothing_where_no_cluster_policy_selects(
    mallory: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, own: SignedModel
) -> None:
    ns = enforced_namespace
    evidence(mallory, ns, **{"own.sig": own.bundle})
    plant(mallory, stack, ns, trusting_own_key(own))
    message = denied(create, mallory, ns, own_model(own))
    assert f"no ClusterModelPolicy selects model 'shadow' in namespace '{ns}'" in message


def test_an_empty_team_policy_does_not_admit_an_unsigned_model_where_no_cluster_policy_selects(
    mallory: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str
) -> None:
    ns = enforced_namespace
    plant(mallory, stack, ns, team_policy("anything-goes"))
    message = denied(create, mallory, ns, model_deployment("shadow", "sha256:" + "7" * 64))
    assert f"no ClusterModelPolicy selects model 'shadow' in namespace '{ns}'" in message


def test_a_team_policy_does_not_admit_a_model_the_cluster_policy_leaves_unselected(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    platform_model: SignedModel,
    own: SignedModel,
) -> None:
    # The platform team governs the fraud* models of this namespace; mallory names hers something else.
    ns = enforced_namespace
    policy = platform_policy(f"fraud-only-{ns}", ns, platform_model)
    policy["spec"]["selector"]["models"] = ["fraud*"]
    with installed_policy(admin, stack, policy):
        evidence(mallory, ns, **{"own.sig": own.bundle})
        plant(mallory, stack, ns, trusting_own_key(own))
        message = denied(create, mallory, ns, own_model(own, "shadow"))
    assert f"no ClusterModelPolicy selects model 'shadow' in namespace '{ns}'" in message


def test_a_team_policy_trusting_the_attackers_key_does_not_replace_the_cluster_authority(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    platform_model: SignedModel,
    own: SignedModel,
) -> None:
    ns = enforced_namespace
    policy = platform_policy(f"signers-{ns}", ns, platform_model)
    with installed_policy(admin, stack, policy):
        evidence(mallory, ns, **{"own.sig": own.bundle})
        plant(mallory, stack, ns, trusting_own_key(own))
        message = denied(create, mallory, ns, own_model(own, "fraud"))
    assert f"signature gate (policy {policy['metadata']['name']}): got 0 verified authorities" in message


def test_a_team_policy_in_warn_mode_does_not_turn_a_cluster_denial_into_a_warning(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    platform_model: SignedModel,
) -> None:
    ns = enforced_namespace
    policy = platform_policy(f"sbom-{ns}", ns, platform_model, sbom={"required": True})
    with installed_policy(admin, stack, policy):
        evidence(mallory, ns, **{"model.sig": platform_model.bundle})
        plant(mallory, stack, ns, team_policy("relaxed", mode="warn", sbom={"required": True}))
        doc = model_deployment("fraud", platform_model.digest, signature=from_config_map("evidence", "model.sig"))
        message = denied(create, mallory, ns, doc)
    assert f"sbom gate (policy {policy['metadata']['name']}): spec.sbom is missing" in message


@pytest.mark.parametrize(
    ("spec", "found"),
    [
        ({"sbom": {"required": False}}, "spec.sbom.required: False, but ClusterModelPolicy"),
        (
            {"compliance": {"minimumTier": "minimal"}},
            "spec.compliance.minimumTier: got 'minimal', but ClusterModelPolicy",
        ),
        (
            {"compliance": {"tiers": {"high": {"requireApproval": False}}}},
            "spec.compliance.tiers.high.requireApproval: false, but ClusterModelPolicy",
        ),
    ],
    ids=["dropping-the-sbom", "lowering-the-assigned-tier", "dropping-approval"],
)
def test_a_team_policy_that_would_drop_a_cluster_requirement_is_refused(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    platform_model: SignedModel,
    spec: dict[str, Any],
    found: str,
) -> None:
    ns = enforced_namespace
    compliance = {
        "minimumTier": "high",
        "approvers": {"groups": ["devmlops:approvers"]},
        "tiers": {"high": {"requireApproval": True, "requiredEvidence": []}},
    }
    policy = platform_policy(f"strict-{ns}", ns, platform_model, sbom={"required": True}, compliance=compliance)
    with installed_policy(admin, stack, policy):
        message = denied(create, mallory, ns, team_policy("looser", **spec))
    assert "a ModelPolicy can only add requirements" in message
    assert found in message


def test_a_team_policy_can_raise_the_tier_so_a_model_labelled_minimal_waits_for_approval(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    platform_model: SignedModel,
) -> None:
    ns = enforced_namespace
    compliance = {
        "approvers": {"groups": ["devmlops:approvers"]},
        "tiers": {"high": {"requireApproval": True, "requiredEvidence": []}},
    }
    with installed_policy(admin, stack, platform_policy(f"tiers-{ns}", ns, platform_model, compliance=compliance)):
        evidence(mallory, ns, **{"model.sig": platform_model.bundle})
        plant(mallory, stack, ns, team_policy("raise", compliance={"minimumTier": "high"}))
        doc = model_deployment("fraud", platform_model.digest, signature=from_config_map("evidence", "model.sig"))
        doc["metadata"]["labels"] = {RISK_LABEL: "minimal"}
        admitted(create, mallory, ns, doc)
        phase = eventually(lambda: status(admin, ns).get("phase"), what="the operator's decision")
        assert phase == "AwaitingApproval", status(admin, ns)
        assert "child" not in status(admin, ns)


def test_a_team_policy_does_not_keep_a_model_admitted_once_no_cluster_policy_selects_it(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    platform_model: SignedModel,
) -> None:
    ns = enforced_namespace
    evidence(mallory, ns, **{"model.sig": platform_model.bundle})
    with installed_policy(admin, stack, platform_policy(f"retired-{ns}", ns, platform_model)):
        plant(mallory, stack, ns, team_policy("sklearn-only", allow={"formats": ["sklearn"]}))
        doc = model_deployment("fraud", platform_model.digest, signature=from_config_map("evidence", "model.sig"))
        admitted(create, mallory, ns, doc)
        eventually(lambda: status(admin, ns).get("phase") == "Admitted", what="Admitted")
    # The platform team retired its policy for this namespace: the team's own policy does not stand in for it.
    eventually(lambda: status(admin, ns).get("phase") == "Degraded", what="Degraded once the cluster policy is gone")
    degraded = next(c for c in status(admin, ns)["conditions"] if c["type"] == "Degraded")
    assert "no ClusterModelPolicy selects model 'fraud'" in degraded["message"]
