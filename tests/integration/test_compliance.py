"""Compliance through the real API server, OPA and operator: a high-risk model waits for a second person,
a prohibited one is refused, Rego changes take effect live, OPA being down fails closed, and team policies
only narrow. Distinct API server users play the ML engineer and the approver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client, denial_message
from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    create_md,
    eventually,
    evidence_config_map,
    from_config_map,
    installed_policy,
    model_deployment,
    signed_model,
)

HIGH_RISK_EVIDENCE = {
    "devmlops.io/logging-sink": "loki://ml-audit/fraud",
    "devmlops.io/conformity-evidence": "https://docs.example.com/conformity/fraud-2",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("compliance"), "fraud")


@pytest.fixture
def team(admin: k8s.ApiClient, namespace: str, model: SignedModel) -> str:
    """RBAC for the namespace: ml-engineers manage ModelDeployments, approvers create ModelApprovals."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rules = {
        "ml-engineers": [{"apiGroups": [GROUP], "resources": ["modeldeployments", "modelpolicies"], "verbs": ["*"]}],
        "approvers": [
            {
                "apiGroups": [GROUP],
                "resources": ["modelapprovals", "modeldeployments"],
                "verbs": ["create", "get", "list"],
            }
        ],
    }
    for group, rule in rules.items():
        rbac.create_namespaced_role(namespace, {"metadata": {"name": group}, "rules": rule})
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": group},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": group},
                "subjects": [{"kind": "Group", "name": f"devmlops:{group}", "apiGroup": "rbac.authorization.k8s.io"}],
            },
        )
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        namespace, evidence_config_map("evidence", namespace, {"model.sig": model.bundle})
    )
    return namespace


@pytest.fixture
def eu_policy(admin: k8s.ApiClient, stack: DevmlopsStack, team: str, model: SignedModel) -> Iterator[str]:
    name = f"eu-{team}"[:63]
    spec = {
        "compliance": {
            "requireRiskLabel": True,
            "approvers": {"groups": ["devmlops:approvers"]},
            "tiers": {"prohibited": {"deny": True}, "high": {"requireApproval": True, "requiredEvidence": []}},
        },
        "rego": {"packages": ["devmlops.eu_ai_act"]},
    }
    with installed_policy(admin, stack, cluster_policy(name, team, model.key.public_pem, **spec)):
        yield name


def high_risk(name: str, model: SignedModel, tier: str = "high", **annotations: str) -> dict[str, Any]:
    doc = model_deployment(name, model.digest, signature=from_config_map("evidence", "model.sig"))
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": tier}
    doc["metadata"]["annotations"] = {**HIGH_RISK_EVIDENCE, **annotations}
    return doc


def status_of(admin: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    md = cast(
        dict[str, Any],
        k8s.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name),
    )
    return cast(dict[str, Any], md.get("status") or {})


def approval(name: str, model_name: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelApproval",
        "metadata": {"name": name},
        "spec": {"modelDeployment": model_name, "digest": digest, **extra},
    }


def create_approval(client: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        k8s.CustomObjectsApi(client).create_namespaced_custom_object(GROUP, VERSION, namespace, "modelapprovals", body),
    )


def test_a_high_risk_model_waits_for_a_second_person_and_is_then_served(
    control_plane: ControlPlane, admin: k8s.ApiClient, team: str, eu_policy: str, model: SignedModel
) -> None:
    # carol is both an ML engineer and an approver: she may approve others' models, never her own.
    with api_client(control_plane.kubeconfig("carol")) as carol, api_client(control_plane.kubeconfig("bob")) as bob:
        stored, warnings = create_md(carol, team, high_risk("fraud", model))
        assert stored["metadata"]["annotations"]["devmlops.io/requested-by"] == "carol"
        assert any("not served until a second person approves" in w for w in warnings), warnings
        waiting = eventually(
            lambda: status_of(admin, team, "fraud").get("phase") == "AwaitingApproval" or None, what="AwaitingApproval"
        )
        assert waiting
        conditions = {c["type"]: c for c in status_of(admin, team, "fraud")["conditions"]}
        assert conditions["AwaitingApproval"]["status"] == "True"
        assert "child" not in status_of(admin, team, "fraud")

        with pytest.raises(ApiException) as own:
            create_approval(carol, team, approval("self-approval", "fraud", model.digest))
        assert own.value.status == 403
        assert "approver 'carol' requested this ModelDeployment; a second person must approve" in denial_message(
            own.value
        )

        with pytest.raises(ApiException) as stale:
            create_approval(bob, team, approval("wrong-digest", "fraud", "sha256:" + "9" * 64))
        assert "spec.digest: got sha256:999999999999..." in denial_message(stale.value)

        created = create_approval(bob, team, approval("bob-approves", "fraud", model.digest))
        assert created["metadata"]["annotations"]["devmlops.io/approved-by"] == "bob"

    served = eventually(lambda: status_of(admin, team, "fraud").get("child"), what="child after approval")
    assert served["kind"] == "InferenceService"
    conditions = {c["type"]: c for c in status_of(admin, team, "fraud")["conditions"]}
    assert conditions["AwaitingApproval"]["status"] == "False"
    assert "approved by bob" in conditions["AwaitingApproval"]["message"]


def test_an_approver_not_named_by_policy_is_refused(
    control_plane: ControlPlane, admin: k8s.ApiClient, team: str, eu_policy: str, model: SignedModel
) -> None:
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role_binding(
        team,
        {
            "metadata": {"name": "alice-approves"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "approvers"},
            "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    with api_client(control_plane.kubeconfig("carol")) as carol, api_client(control_plane.kubeconfig("alice")) as alice:
        create_md(carol, team, high_risk("fraud", model))
        with pytest.raises(ApiException) as caught:
            create_approval(alice, team, approval("alice-approves", "fraud", model.digest))
    assert "'alice' (groups ['devmlops:ml-engineers', 'system:authenticated']) is not an approver" in denial_message(
        caught.value
    )


def test_a_prohibited_model_is_denied(admin: k8s.ApiClient, team: str, eu_policy: str, model: SignedModel) -> None:
    with pytest.raises(ApiException) as caught:
        create_md(admin, team, high_risk("fraud", model, tier="prohibited"))
    message = denial_message(caught.value)
    assert f"compliance gate (policy {eu_policy}): risk tier prohibited: the policy never admits this tier" in message
    assert "(and 1 more failure(s))" in message  # the Rego EU AI Act package denies it too


def test_a_high_risk_model_without_its_article_12_logging_sink_is_denied_by_rego(
    admin: k8s.ApiClient, team: str, eu_policy: str, model: SignedModel
) -> None:
    doc = high_risk("fraud", model)
    del doc["metadata"]["annotations"]["devmlops.io/logging-sink"]
    with pytest.raises(ApiException) as caught:
        create_md(admin, team, doc)
    assert (
        f"rego gate (policy {eu_policy}): devmlops.eu_ai_act: EU AI Act high risk: annotation "
        "devmlops.io/logging-sink is missing"
    ) in denial_message(caught.value)


def test_a_user_supplied_requester_is_replaced_by_the_real_one(
    control_plane: ControlPlane, team: str, eu_policy: str, model: SignedModel
) -> None:
    with api_client(control_plane.kubeconfig("alice")) as alice:
        forged = high_risk("fraud", model, **{"devmlops.io/requested-by": "bob"})
        stored, _warnings = create_md(alice, team, forged)
    assert stored["metadata"]["annotations"]["devmlops.io/requested-by"] == "alice"


def test_an_edited_rego_rule_changes_the_decision_without_a_restart(
    admin: k8s.ApiClient, stack: DevmlopsStack, team: str, eu_policy: str, model: SignedModel, policies_dir: Path
) -> None:
    assert stack.webhook is not None
    assert stack.opa is not None
    assert stack.opa.process is not None
    pids = (stack.webhook.pid, stack.opa.process.pid)
    extra = policies_dir / "eu_ai_act" / "freeze.rego"
    extra.write_text(
        "package devmlops.eu_ai_act\n\nimport rego.v1\n\n"
        'deny contains "change freeze: no new high-risk models this week" if input.compliance.tier == "high"\n'
    )
    try:
        message = eventually(
            lambda: _denied_message(admin, team, high_risk("frozen", model)), what="rule taking effect"
        )
        assert "change freeze: no new high-risk models this week" in message
    finally:
        extra.unlink()
    eventually(lambda: _denied_message(admin, team, high_risk("thawed", model)) == "", what="rule removal")
    assert (stack.webhook.pid, stack.opa.process.pid) == pids


def _denied_message(admin: k8s.ApiClient, namespace: str, doc: dict[str, Any]) -> str:
    try:
        k8s.CustomObjectsApi(admin).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments", doc, dry_run="All"
        )
    except ApiException as exc:
        return denial_message(exc)
    return ""


def test_opa_down_means_denied_with_the_reason_never_admitted(
    admin: k8s.ApiClient, stack: DevmlopsStack, team: str, eu_policy: str, model: SignedModel
) -> None:
    assert stack.opa is not None
    port = stack.opa.port
    stack.opa.stop()
    try:
        message = _denied_message(admin, team, high_risk("fraud", model))
        assert f"rego gate (policy {eu_policy}): devmlops.eu_ai_act: OPA query failed" in message
    finally:
        stack.opa.start(port=port)
    assert _denied_message(admin, team, high_risk("fraud", model)) == ""


def test_a_team_policy_may_narrow_but_not_widen(
    control_plane: ControlPlane, admin: k8s.ApiClient, stack: DevmlopsStack, team: str, model: SignedModel
) -> None:
    name = f"narrow-{team}"[:63]
    policy = cluster_policy(name, team, model.key.public_pem, allow={"storageUris": ["s3://models/**"]})
    api = k8s.CustomObjectsApi(admin)
    with installed_policy(admin, stack, policy), api_client(control_plane.kubeconfig("alice")) as alice:
        wider = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelPolicy",
            "metadata": {"name": "wider"},
            "spec": {"allow": {"storageUris": ["s3://scratch/**"]}},
        }
        with pytest.raises(ApiException) as caught:
            k8s.CustomObjectsApi(alice).create_namespaced_custom_object(GROUP, VERSION, team, "modelpolicies", wider)
        assert (
            "a ModelPolicy can only add requirements: spec.allow.storageUris 's3://scratch/**' is outside what "
            f"ClusterModelPolicy {name} allows"
        ) in denial_message(caught.value)
        narrower = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelPolicy",
            "metadata": {"name": "onnx-only"},
            "spec": {"allow": {"storageUris": ["s3://models/team/**"], "formats": ["onnx"]}},
        }
        k8s.CustomObjectsApi(alice).create_namespaced_custom_object(GROUP, VERSION, team, "modelpolicies", narrower)
        stack.wait_for_policies(present=[f"{team}/onnx-only"])
        try:
            doc = model_deployment("fraud", model.digest, signature=from_config_map("evidence", "model.sig"))
            message = _denied_message(alice, team, doc)
            assert f"allowlist gate (policy {team}/onnx-only): spec.model.uri: got 's3://models/fraud'" in message
        finally:
            api.delete_namespaced_custom_object(GROUP, VERSION, team, "modelpolicies", "onnx-only")
            stack.wait_for_policies(absent=[f"{team}/onnx-only"])


def test_an_expired_approval_takes_the_model_server_down_at_the_next_re_check(
    control_plane: ControlPlane, admin: k8s.ApiClient, team: str, eu_policy: str, model: SignedModel
) -> None:
    import datetime as dt

    with api_client(control_plane.kubeconfig("carol")) as carol, api_client(control_plane.kubeconfig("bob")) as bob:
        create_md(carol, team, high_risk("fraud", model))
        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
        create_approval(bob, team, approval("short", "fraud", model.digest, expires=soon))
    eventually(lambda: status_of(admin, team, "fraud").get("child"), what="child while approved")
    time.sleep(5)
    api = k8s.CustomObjectsApi(admin)
    api.patch_cluster_custom_object(
        GROUP, VERSION, "clustermodelpolicies", eu_policy, {"metadata": {"labels": {"touched": "1"}}}
    )  # any policy change re-checks now
    eventually(lambda: status_of(admin, team, "fraud").get("phase") == "AwaitingApproval", what="re-check")
    isvc = cast(
        dict[str, Any],
        api.get_namespaced_custom_object("serving.kserve.io", "v1beta1", team, "inferenceservices", "fraud"),
    )
    assert isvc["spec"]["predictor"]["minReplicas"] == 0
    serving = next(c for c in status_of(admin, team, "fraud")["conditions"] if c["type"] == "ServingReady")
    assert serving["message"].startswith("approval no longer valid: InferenceService/fraud scaled to zero")
