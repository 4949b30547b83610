"""The edit-role review: mallory bound to Kubernetes's own ``edit`` ClusterRole (docs/threat-model.md), through the
real API server, with the rights the hand-written attack Role never gave her (ServiceAccounts, their tokens and
impersonation, PersistentVolumeClaims, HorizontalPodAutoscalers, PodDisruptionBudgets, NetworkPolicies, Leases,
Ingresses, ResourceClaims).

1. A ServiceAccount the requester can act as is no second person. Four eyes asked whether the approver may act as
   the ServiceAccount that requested a model, never the other way round: mallory, who edits the CI namespace too
   (``edit`` lets her mint tokens for its ServiceAccounts), created her high-risk model as herself and approved it
   with a token she minted for the CI namespace's approver bot, which a policy names: admitted.
2. A ServiceAccount is no second person to a ServiceAccount's request, whatever their namespaces. Four eyes refused
   two ServiceAccounts of one namespace only: mallory, who edits the CI namespace and the approvals namespace,
   requested her model with a token minted for CI's release bot and approved it with one minted for the approvals
   namespace's bot: admitted (neither bot may act as the other, which is all the API server can be asked).
3. The requester is asked about in their groups. mallory edits the approvals namespace through a group of hers
   (the cluster admin let ML engineers edit it), and the question of 1 was asked of her as any authenticated user:
   her model, approved with a token she minted for that namespace's bot, was admitted. Her groups are now stamped
   with her (``devmlops.io/requester-groups``, from the request, as ``requested-by``).
4. A model whose requester's groups are not recorded (stamped before they were) was asked about as any authenticated
   user, and her bot's approval of it admitted as in 3 (rereading of the change): a ServiceAccount may not approve it.

Tried with throwaway probes through the real stack and held (no test kept): her HorizontalPodAutoscalers (minimum
and maximum 3 and 4) on a served Triton model's Deployment and ReplicaSet, with the HPA controller running, and a
PodDisruptionBudget over its Pods: the HPA scaled the served model (allowed), and after the key was revoked the
Deployment, the ReplicaSet and the Pods went to zero and stayed there (the HPA controller leaves a target at zero
alone, and a scale up is reviewed whoever sends it); a ServiceAccount of her namespace named ``devmlops-operator``,
by token and by impersonation, may not write the model's Deployment (writers are compared by whole username). Her
Ingresses (to the model's Service, to an ExternalName of her own), NetworkPolicies and Leases are admitted: an
Ingress is a stated residual risk (traffic steering outside what devmlops owns), a NetworkPolicy can only cut traffic
(a canary nobody's metrics reach is never promoted; an initializer that cannot download leaves no Pod), and nothing
of devmlops, KServe or the cluster leads on a team's Leases. The requester stamps of another's model, on updates that
keep what is served (a merge patch setting or removing them, or removing every annotation; server-side apply with a
stamp of hers, then without it; a replace with an unreadable groups stamp): each admitted, both stamps stored as the
mutating webhook wrote them first. A ClusterBreakGlass naming a ServiceAccount and system:authenticated: kubectl's
writer is shown one warning for each.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import ATTACKER, EDITOR_ROLE, RBAC_API, bind_role, denied
from tests.integration.attacks.test_four_eyes import _as_token, approval, approval_required, approve, high_risk, phase
from tests.integration.attacks.test_round2_review import _minted, bot_approval_refused, ci_bots  # noqa: F401
from tests.integration.support import SignedModel, create_md, eventually


def test_a_service_account_the_requester_can_act_as_is_no_second_person(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    ci_bots: tuple[str, k8s.ApiClient, k8s.ApiClient],  # noqa: F811 (the fixture imported above)
    attack_model: SignedModel,
) -> None:
    namespace, (ci, _release_bot, approver_bot) = enforced_namespace, ci_bots
    message = bot_approval_refused(admin, stack, namespace, ci, mallory, approver_bot, attack_model)
    approver = f"system:serviceaccount:{ci}:approver-bot"
    assert f"the requester 'mallory' may act as the approver {approver!r}" in message, message


def test_a_service_account_is_no_second_person_to_another_namespaces_service_account(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    new_namespace: Callable[..., str],
    attack_model: SignedModel,
) -> None:
    namespace = enforced_namespace
    ci, approvals = new_namespace("ci", enforced=False), new_namespace("ok", enforced=False)  # mallory edits both
    rbac, core = k8s.RbacAuthorizationV1Api(admin), k8s.CoreV1Api(admin)
    tokens: dict[str, str] = {}
    for home, account in ((ci, "release-bot"), (approvals, "approver-bot")):
        core.create_namespaced_service_account(home, {"metadata": {"name": account}})
        subject = {"kind": "ServiceAccount", "name": account, "namespace": home}
        bind_role(rbac, namespace, f"{account}-edits", EDITOR_ROLE, subject)  # deploys, or approves, in the team's
        tokens[account] = eventually(  # edit lets her mint tokens in both namespaces
            lambda home=home, account=account: _minted(k8s.CoreV1Api(mallory), home, account), what=f"{account} token"
        )
    approver = f"system:serviceaccount:{approvals}:approver-bot"
    with (
        approval_required(admin, stack, namespace, attack_model, f"edit-sa2-{namespace}", {"users": [approver]}),
        _as_token(mallory, tokens["release-bot"]) as release_bot,
        _as_token(mallory, tokens["approver-bot"]) as approver_bot,
    ):
        eventually(lambda: _created(release_bot, namespace, attack_model), what="the release bot's model")
        eventually(lambda: phase(admin, namespace) == "AwaitingApproval", what="AwaitingApproval")
        message = denied(approve, approver_bot, namespace, approval("bot-approves", attack_model.digest))
        assert f"whoever edits namespaces {ci} and {approvals} can act as both" in message, message
        assert phase(admin, namespace) == "AwaitingApproval"


def _created(client: k8s.ApiClient, namespace: str, model: SignedModel) -> bool:
    """Whether the model was created (a new RoleBinding takes a moment to reach the authorizer: 403 until then)."""
    try:
        create_md(client, namespace, high_risk(model))
    except k8s.ApiException as exc:
        if exc.status == 403 and "devmlops" not in str(exc.body):
            return False
        raise
    return True


ENGINEERS = "devmlops:ml-engineers"  # a group mallory is in (harness/controlplane.py DEFAULT_USERS)


@pytest.fixture
def engineers_namespace(admin: k8s.ApiClient) -> Iterator[str]:
    """A namespace the ML engineers' group edits (``edit`` bound to the group, not to mallory by name)."""
    name = f"atk-engineers-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    try:
        group = {"kind": "Group", "name": ENGINEERS, "apiGroup": RBAC_API}
        bind_role(k8s.RbacAuthorizationV1Api(admin), name, "engineers-edit", "edit", group, kind="ClusterRole")
        yield name
    finally:
        core.delete_namespace(name)


@pytest.mark.parametrize("recorded", [True, False], ids=["groups-recorded", "groups-not-recorded"])
def test_the_requester_is_asked_about_in_their_groups(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    engineers_namespace: str,
    attack_model: SignedModel,
    recorded: bool,
) -> None:
    """Not recorded: the model as an upgrade leaves it, its groups stamp removed while no webhook is registered."""
    namespace, approvals = enforced_namespace, engineers_namespace
    approver, token = _engineers_bot(admin, mallory, namespace, approvals)
    with (
        approval_required(admin, stack, namespace, attack_model, f"edit-grp-{namespace}", {"users": [approver]}),
        _as_token(mallory, token) as approver_bot,
    ):
        stored, _warnings = create_md(mallory, namespace, high_risk(attack_model))
        assert ENGINEERS in stored["metadata"]["annotations"]["devmlops.io/requester-groups"]
        eventually(lambda: phase(admin, namespace) == "AwaitingApproval", what="AwaitingApproval")
        if not recorded:
            stack.unregister_webhook()  # as a version that did not stamp the groups left it
            try:
                unstamp = {"metadata": {"annotations": {"devmlops.io/requester-groups": None}}}
                k8s.CustomObjectsApi(admin).patch_namespaced_custom_object(
                    "devmlops.io", "v1alpha1", namespace, "modeldeployments", stored["metadata"]["name"], unstamp
                )
            finally:
                stack.register_webhook()
        eventually(lambda: _may_approve(approver_bot, namespace), what="the bot's RoleBinding in the authorizer")
        message = denied(approve, approver_bot, namespace, approval("bot-approves", attack_model.digest))
        assert f"the requester {ATTACKER!r} may act as the approver {approver!r}" in message, message
        if not recorded:
            assert "annotation devmlops.io/requester-groups of the ModelDeployment is missing" in message, message


def _engineers_bot(admin: k8s.ApiClient, mallory: k8s.ApiClient, namespace: str, approvals: str) -> tuple[str, str]:
    """The approvals namespace's approver bot, which may approve in ``namespace``: its username, and a token mallory
    minted for it with the rights of her ML engineers' group."""
    k8s.CoreV1Api(admin).create_namespaced_service_account(approvals, {"metadata": {"name": "approver-bot"}})
    subject = {"kind": "ServiceAccount", "name": "approver-bot", "namespace": approvals}
    bind_role(k8s.RbacAuthorizationV1Api(admin), namespace, "approver-bot-approves", EDITOR_ROLE, subject)
    token = eventually(lambda: _minted(k8s.CoreV1Api(mallory), approvals, "approver-bot"), what="a token, by group")
    return f"system:serviceaccount:{approvals}:approver-bot", token


def _may_approve(client: k8s.ApiClient, namespace: str) -> bool:
    attributes = {"namespace": namespace, "verb": "create", "group": "devmlops.io", "resource": "modelapprovals"}
    body = {"spec": {"resourceAttributes": attributes}}
    return bool(k8s.AuthorizationV1Api(client).create_self_subject_access_review(body).status.allowed)
