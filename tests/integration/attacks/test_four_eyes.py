"""Property 7 of docs/threat-model.md, four eyes, attacked by a namespace editor (mallory) who is also an approver.

The requester is whoever set what is served (the model, its signature and SBOM, the runtime except its replica
count); scaling or relabelling does not make anyone the requester. An approval binds the ModelDeployment's uid and
what it serves, and its approver's groups are checked again against the policy when the model is served.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import ALLOWED_IMAGES, EDITOR_ROLE, denied
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

REQUESTED_BY = "devmlops.io/requested-by"


@pytest.fixture
def editors(admin: k8s.ApiClient, enforced_namespace: str) -> str:
    """Besides mallory (the attacker, also in devmlops:approvers), alice (an ML engineer) and bob (an approver)
    edit the namespace: the honest requester and the honest second person."""
    binding: Any = {
        "metadata": {"name": "honest-editors"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": EDITOR_ROLE},
        "subjects": [
            {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"} for user in ("alice", "bob")
        ],
    }
    k8s.RbacAuthorizationV1Api(admin).create_namespaced_role_binding(enforced_namespace, binding)
    return enforced_namespace


@pytest.fixture
def alice(as_user: Callable[[str], k8s.ApiClient], editors: str) -> k8s.ApiClient:
    return as_user("alice")


@pytest.fixture
def bob(as_user: Callable[[str], k8s.ApiClient], editors: str) -> k8s.ApiClient:
    return as_user("bob")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("four-eyes"), "fraud")


@contextmanager
def approval_required(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    namespace: str,
    model: SignedModel,
    name: str,
    approvers: dict[str, list[str]] | None = None,
) -> Iterator[str]:
    """``model``'s bundle in the ConfigMap "evidence" and the installed ClusterModelPolicy ``name``: high risk needs a
    ModelApproval by one of ``approvers`` (default: a member of devmlops:approvers) other than the requester."""
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        namespace, evidence_config_map("evidence", namespace, {"model.sig": model.bundle})
    )
    compliance = {
        "approvers": approvers or {"groups": ["devmlops:approvers"]},
        "tiers": {"high": {"requireApproval": True, "requiredEvidence": []}},
    }
    policy_name = name[:63]
    body = cluster_policy(
        policy_name, namespace, model.key.public_pem, compliance=compliance, allow={"images": ALLOWED_IMAGES}
    )
    with installed_policy(admin, stack, body):
        yield policy_name


@pytest.fixture
def policy(admin: k8s.ApiClient, stack: DevmlopsStack, editors: str, model: SignedModel) -> Iterator[str]:
    """High risk needs a ModelApproval by a member of devmlops:approvers other than the requester."""
    with approval_required(admin, stack, editors, model, f"four-eyes-{editors}") as name:
        yield name


def high_risk(model: SignedModel, name: str = "fraud", **spec: Any) -> dict[str, Any]:
    doc = model_deployment(name, model.digest, signature=from_config_map("evidence", "model.sig"), **spec)
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "high"}
    return doc


def approval(
    name: str, digest: str, *, target: str = "fraud", annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelApproval",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"modelDeployment": target, "digest": digest},
    }


def approve(client: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        k8s.CustomObjectsApi(client).create_namespaced_custom_object(GROUP, VERSION, namespace, "modelapprovals", body),
    )


def stored(admin: k8s.ApiClient, namespace: str, name: str = "fraud") -> dict[str, Any]:
    return cast(
        dict[str, Any],
        k8s.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name),
    )


def phase(admin: k8s.ApiClient, namespace: str, name: str = "fraud") -> str:
    """The operator's phase for the current generation ('' until it decided that generation)."""
    md = stored(admin, namespace, name)
    status = md.get("status") or {}
    if status.get("observedGeneration") != md["metadata"].get("generation"):
        return ""
    return str(status.get("phase") or "")


def served_after_approval(admin: k8s.ApiClient, namespace: str) -> None:
    eventually(lambda: phase(admin, namespace) == "Admitted", what="the approved model being served")


def patch_md(client: k8s.ApiClient, namespace: str, body: dict[str, Any], name: str = "fraud") -> dict[str, Any]:
    return cast(
        dict[str, Any],
        k8s.CustomObjectsApi(client).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments", name, body
        ),
    )


def requester(admin: k8s.ApiClient, namespace: str, name: str = "fraud") -> str:
    return str((stored(admin, namespace, name)["metadata"].get("annotations") or {}).get(REQUESTED_BY))


@pytest.mark.parametrize(
    "change",
    [
        {"spec": {"runtime": {"replicas": 3}}},
        {"metadata": {"labels": {"team": "payments"}, "annotations": {"note": "more replicas for the sale"}}},
        {"spec": {"runtime": {"replicas": 2}}, "metadata": {"labels": {"team": "payments"}}},
    ],
    ids=["scaling", "relabelling", "both"],
)
def test_scaling_or_relabelling_a_model_does_not_make_that_person_its_requester(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    alice: k8s.ApiClient,
    editors: str,
    policy: str,
    model: SignedModel,
    change: dict[str, Any],
) -> None:
    # mallory asks for her model; alice only scales or relabels it. If that made alice the requester, mallory
    # could approve her own model as "the second person".
    create_md(mallory, editors, high_risk(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
    patch_md(alice, editors, change)
    assert requester(admin, editors) == "mallory"
    message = denied(approve, mallory, editors, approval("self", model.digest))
    assert "approver 'mallory' requested this ModelDeployment; a second person must approve" in message
    assert phase(admin, editors) in ("AwaitingApproval", "")


def test_changing_what_is_served_makes_the_changer_the_requester_who_cannot_approve_it(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, alice: k8s.ApiClient, editors: str, policy: str, model: SignedModel
) -> None:
    create_md(alice, editors, high_risk(model))
    patch_md(mallory, editors, {"spec": {"model": {"uri": "s3://mallory/fraud"}}})
    assert requester(admin, editors) == "mallory"
    message = denied(approve, mallory, editors, approval("self", model.digest))
    assert "approver 'mallory' requested this ModelDeployment; a second person must approve" in message


def test_an_approval_does_not_carry_over_to_a_model_deployment_recreated_under_the_same_name(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    alice: k8s.ApiClient,
    bob: k8s.ApiClient,
    editors: str,
    policy: str,
    model: SignedModel,
) -> None:
    create_md(alice, editors, high_risk(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
    approve(bob, editors, approval("bob-approves", model.digest))
    served_after_approval(admin, editors)
    # mallory deletes what bob approved and puts her own ModelDeployment of the same name and digest in its place.
    api = k8s.CustomObjectsApi(mallory)
    api.delete_namespaced_custom_object(GROUP, VERSION, editors, "modeldeployments", "fraud")
    try:  # the garbage collector may have been quicker
        api.delete_namespaced_custom_object("serving.kserve.io", "v1beta1", editors, "inferenceservices", "fraud")
    except ApiException as exc:
        if exc.status != 404:
            raise

    def gone() -> bool:
        try:
            stored(admin, editors)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone, what="the deletion")
    create_md(mallory, editors, high_risk(model, uri="s3://mallory/fraud"))
    eventually(lambda: phase(admin, editors), what="a decision on the recreated ModelDeployment")
    assert phase(admin, editors) == "AwaitingApproval", stored(admin, editors).get("status")
    assert "child" not in (stored(admin, editors).get("status") or {})


@pytest.mark.parametrize(
    "change",
    [
        lambda _model: {"spec": {"model": {"uri": "s3://mallory/fraud"}}},
        lambda _model: {"spec": {"runtime": {"resources": {"limits": {"cpu": "3"}}}}},
        lambda model: {"spec": {"signature": {"inline": model.bundle, "configMapKeyRef": None}}},
    ],
    ids=["model-uri", "runtime-resources", "signature-source"],
)
def test_an_approval_does_not_cover_what_someone_changed_after_it_was_given(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    alice: k8s.ApiClient,
    bob: k8s.ApiClient,
    editors: str,
    policy: str,
    model: SignedModel,
    change: Callable[[SignedModel], dict[str, Any]],
) -> None:
    create_md(alice, editors, high_risk(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
    approve(bob, editors, approval("bob-approves", model.digest))
    served_after_approval(admin, editors)
    patch_md(mallory, editors, change(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="the change awaiting a new approval")
    serving = next(c for c in stored(admin, editors)["status"]["conditions"] if c["type"] == "ServingReady")
    assert serving["message"].startswith("approval no longer valid"), serving


def test_an_approval_stops_counting_when_the_policy_no_longer_names_the_approvers_group(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, alice: k8s.ApiClient, editors: str, policy: str, model: SignedModel
) -> None:
    create_md(alice, editors, high_risk(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
    approve(mallory, editors, approval("mallory-approves", model.digest))  # allowed today: she is an approver
    served_after_approval(admin, editors)
    # The platform team narrows who may approve; mallory's group is no longer among them.
    k8s.CustomObjectsApi(admin).patch_cluster_custom_object(
        GROUP,
        VERSION,
        "clustermodelpolicies",
        policy,
        {"spec": {"compliance": {"approvers": {"groups": ["devmlops:risk-officers"]}}}},
    )
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="the approval no longer counting")
    waiting = next(c for c in stored(admin, editors)["status"]["conditions"] if c["type"] == "AwaitingApproval")
    assert waiting["status"] == "True"


def test_an_approvals_bindings_are_stamped_from_the_request_whatever_the_approver_wrote(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, alice: k8s.ApiClient, editors: str, policy: str, model: SignedModel
) -> None:
    created, _warnings = create_md(alice, editors, high_risk(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
    forged = {
        "devmlops.io/approved-by": "bob",
        "devmlops.io/approved-uid": "00000000-0000-0000-0000-000000000000",
        "devmlops.io/approver-groups": json.dumps(["system:masters", "devmlops:approvers"]),
        "devmlops.io/approved-spec": "sha256:" + "0" * 64,
    }
    made = approve(mallory, editors, approval("mallory-approves", model.digest, annotations=forged))
    annotations = made["metadata"]["annotations"]
    assert annotations["devmlops.io/approved-by"] == "mallory"
    assert annotations["devmlops.io/approved-uid"] == created["metadata"]["uid"]
    groups = json.loads(annotations["devmlops.io/approver-groups"])
    assert "devmlops:approvers" in groups
    assert "system:masters" not in groups
    assert annotations["devmlops.io/approved-spec"] != forged["devmlops.io/approved-spec"]


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("devmlops.io/approved-uid", "00000000-0000-0000-0000-000000000000"),
        ("devmlops.io/approver-groups", json.dumps(["system:masters"])),
        ("devmlops.io/approved-spec", "sha256:" + "0" * 64),
    ],
    ids=["uid", "groups", "served-spec"],
)
def test_an_approvals_bindings_cannot_be_edited_after_it_was_given(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    alice: k8s.ApiClient,
    editors: str,
    policy: str,
    model: SignedModel,
    annotation: str,
    value: str,
) -> None:
    create_md(alice, editors, high_risk(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
    approve(mallory, editors, approval("mallory-approves", model.digest))
    edit = {"metadata": {"annotations": {annotation: value}}}
    api = k8s.CustomObjectsApi(mallory)
    message = denied(
        api.patch_namespaced_custom_object, GROUP, VERSION, editors, "modelapprovals", "mallory-approves", edit
    )
    assert f"annotation {annotation}" in message


def _as_token(client: k8s.ApiClient, token: str) -> k8s.ApiClient:
    """A client to the same API server that authenticates with ``token`` (and nothing of ``client``'s)."""
    configuration = k8s.Configuration()
    configuration.host = client.configuration.host
    configuration.ssl_ca_cert = client.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return k8s.ApiClient(configuration)


def test_a_service_account_of_the_models_namespace_is_no_second_person(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, editors: str, model: SignedModel, stack: DevmlopsStack
) -> None:
    """A policy names a release bot, a ServiceAccount of the team's namespace, as an approver (the cluster admin
    gave it the right to create ModelApprovals). The built-in edit role lets every editor there create tokens for
    its ServiceAccounts (and impersonate them): mallory requests her model, mints a token for the bot and approves
    it as the bot, one person with two names. Refused, naming the reason (before: admitted, and the model served)."""
    rbac, core = k8s.RbacAuthorizationV1Api(admin), k8s.CoreV1Api(admin)
    # The API server's bootstrap rules of the edit role (what the aggregation controller writes into "edit").
    built_in = rbac.read_cluster_role("system:aggregate-to-edit").rules or []
    assert any("serviceaccounts/token" in (r.resources or []) and "create" in r.verbs for r in built_in)
    assert any("serviceaccounts" in (r.resources or []) and "impersonate" in r.verbs for r in built_in)
    # What the built-in edit role grants her besides the attacker's Role: tokens for the namespace's accounts.
    rbac.create_namespaced_role(editors, {"metadata": {"name": "sa-tokens"}, "rules": [
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]})  # fmt: skip
    binding = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role"}
    rbac.create_namespaced_role_binding(editors, {"metadata": {"name": "sa-tokens"}, "roleRef": {**binding,
        "name": "sa-tokens"}, "subjects": [{"kind": "User", "name": "mallory",
        "apiGroup": "rbac.authorization.k8s.io"}]})  # fmt: skip
    # The cluster admin's release bot: an approver by policy, allowed to create ModelApprovals there.
    bot = f"system:serviceaccount:{editors}:release-approver"
    core.create_namespaced_service_account(editors, {"metadata": {"name": "release-approver"}})
    rbac.create_namespaced_role_binding(editors, {"metadata": {"name": "release-approver"}, "roleRef": {**binding,
        "name": EDITOR_ROLE}, "subjects": [{"kind": "ServiceAccount", "name": "release-approver",
        "namespace": editors}]})  # fmt: skip
    approvers = {"users": [bot], "groups": ["devmlops:approvers"]}
    with approval_required(admin, stack, editors, model, f"bot-{editors}", approvers):
        create_md(mallory, editors, high_risk(model))
        eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
        token = k8s.CoreV1Api(mallory).create_namespaced_service_account_token(
            "release-approver", editors, {"spec": {"expirationSeconds": 600}}
        )
        with _as_token(mallory, token.status.token) as as_bot:
            message = denied(approve, as_bot, editors, approval("bot-approves", model.digest))
        assert f"the approver {bot!r} is a ServiceAccount of namespace {editors}" in message
        assert phase(admin, editors) == "AwaitingApproval"


def test_a_withdrawn_approval_stops_the_model_within_seconds(
    admin: k8s.ApiClient, alice: k8s.ApiClient, bob: k8s.ApiClient, editors: str, policy: str, model: SignedModel
) -> None:
    """bob withdraws (deletes) the approval a served high-risk model rests on: the model waits for another one and
    its server is scaled to zero within seconds, not at the operator's next re-check round (five minutes here as by
    default: before, nothing looked at a deleted approval sooner)."""
    create_md(alice, editors, high_risk(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
    approve(bob, editors, approval("bob-approves", model.digest))
    served_after_approval(admin, editors)
    k8s.CustomObjectsApi(bob).delete_namespaced_custom_object(GROUP, VERSION, editors, "modelapprovals", "bob-approves")
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", timeout=30, what="the withdrawal taking effect")
    serving = next(c for c in stored(admin, editors)["status"]["conditions"] if c["type"] == "ServingReady")
    assert serving["message"].startswith("approval no longer valid"), serving


def test_an_approval_naming_the_generation_it_read_does_not_cover_a_change_made_just_before_it(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    alice: k8s.ApiClient,
    bob: k8s.ApiClient,
    editors: str,
    policy: str,
    model: SignedModel,
) -> None:
    """bob reads alice's model (generation N) and approves its digest; just before, mallory changed where its bytes
    come from (same digest). The approval binds what is served when it is created, so without more bob would
    approve her change unseen: bob names the generation he read, and the approval is refused (before: the field was
    pruned and the approval admitted, bound to mallory's change). Approving the generation he then reads passes."""
    create_md(alice, editors, high_risk(model))
    eventually(lambda: phase(admin, editors) == "AwaitingApproval", what="AwaitingApproval")
    read = int(stored(admin, editors)["metadata"]["generation"])
    patch_md(mallory, editors, {"spec": {"model": {"uri": "s3://mallory/fraud"}}})
    body = approval("bob-approves", model.digest)
    body["spec"]["generation"] = read
    message = denied(approve, bob, editors, body)
    assert f"spec.generation: got {read}, but ModelDeployment fraud is at generation {read + 1}" in message
    body["spec"]["generation"] = int(stored(admin, editors)["metadata"]["generation"])
    made = approve(bob, editors, body)
    assert made["spec"]["generation"] == read + 1
