"""Second attack round over the gates review and the pods review (four eyes by SubjectAccessReview, the storage
allow-list's refused URI forms), each through the real API server as ``mallory``, a namespace editor.

1. A path parameter after a dot segment: ``allow.storageUris`` refused ``.`` and ``..`` segments (written or
   percent-encoded) but not ``..;`` or ``.;``. Clients send them as written; servers that take path parameters off a
   segment before resolving it (Tomcat, and Spring and Jetty behind it) resolve ``/prod/..;/staging/m`` as
   ``/staging/m``. ``https://models.example.com/prod/..;/staging/fraud.tar.gz`` matched
   ``https://models.example.com/prod/**`` and was admitted (the gates review listed it as a residual risk, not closed).
   Only the admission is shown (no such server runs in the attack tests); its cases are in ``test_storage_uris.py``.
2. Four eyes asks the API server whether an approver may act as the ServiceAccount that requested a model, but only
   in six ways (impersonate it, mint its token, create Pods, Secrets, Deployments or Jobs in its namespace). The
   others were not asked: create a StatefulSet, DaemonSet, ReplicaSet, CronJob or ReplicationController that runs
   as it, patch a workload or a Pod to run your image as it, exec into (or attach to, or add an ephemeral container
   to) a Pod that runs as it, read its token Secret. mallory, an approver, may create CronJobs (only that) in the CI
   namespace where the release bot runs; her CronJob runs as the bot, which creates her high-risk model (the bot is
   its requester), and she approves it herself: admitted.
3. A team's glob is mallory's to write, and it was matched as a backtracking regular expression: the ModelPolicy
   ``allow.storageUris: ["https://models.example.com/prod/**a**a**a**a**b"]`` narrows the cluster's
   ``https://models.example.com/prod/**`` (admitted), and a ModelDeployment whose URI is that folder and a few
   hundred ``a`` took the webhook seconds to hours of CPU (each ``**`` multiplies the work by the URI's length) while
   holding Python's interpreter lock: every other admission review in the cluster waited, and the API server denied
   them on its timeout (failurePolicy Fail). The operator, which decides the same policies, would stall likewise.
4. Two ServiceAccounts of one namespace are one person to whoever edits it: the release bot of the CI namespace
   requested mallory's model (with a token she minted there), and a policy names the CI namespace's approver bot
   (another ServiceAccount there) as an approver. The webhook asked whether the approver bot may act as the release
   bot (it may not: it has no rights there), never whether someone may act as both: mallory's approval with a token
   she minted for the approver bot was admitted.

Tried and held (a test that passed before this round): a model requested by impersonating the release bot
(Impersonate-User) is the bot's, its impersonator is no second person, and RBAC refuses her an approvers' group on
the bot's identity (Impersonate-Group).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.kube import api_client
from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    EDITOR_ROLE,
    bind_role,
    create_model_deployment,
    denied,
    devmlops_denial,
    forbidden_by_rbac,
    pod,
    pod_spec,
    policy_name,
    user_subject,
)
from tests.integration.attacks.test_four_eyes import (
    _as_token,
    approval,
    approval_required,
    approve,
    high_risk,
    phase,
)
from tests.integration.attacks.test_storage_uris import KSERVE, PROD, _at
from tests.integration.attacks.test_team_policies import plant, team_policy
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    create_md,
    eventually,
    trusting,
)

# -- 2. four eyes: every way to act as the requesting ServiceAccount ---------------------------------------------------

BOT = "release-bot"
ALPINE = "registry.example.com/platform/toolbox@sha256:" + "4" * 64


def _pod_template(account: str, restart: str) -> dict[str, Any]:
    container = {"name": "c", "image": ALPINE}
    return {"spec": {"serviceAccountName": account, "restartPolicy": restart, "containers": [container]}}


# A narrow Role in the bot's namespace (no pods, deployments, jobs, secrets, tokens or impersonation), and what it
# lets mallory do there as the bot.
WAYS: dict[str, tuple[dict[str, Any], Any]] = {
    "cronjobs": (
        {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["create"]},
        lambda client, ns: k8s.BatchV1Api(client).create_namespaced_cron_job(
            ns,
            {
                "metadata": {"name": "nightly"},
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": _pod_template(BOT, "Never")}}},
            },
        ),
    ),
    "statefulsets": (
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["create"]},
        lambda client, ns: k8s.AppsV1Api(client).create_namespaced_stateful_set(
            ns,
            {
                "metadata": {"name": "runner"},
                "spec": {
                    "selector": {"matchLabels": {"app": "runner"}},
                    "serviceName": "runner",
                    "template": {"metadata": {"labels": {"app": "runner"}}, **_pod_template(BOT, "Always")},
                },
            },
        ),
    ),
}


@pytest.fixture
def ci_namespace(admin: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """The CI namespace where the release bot (a ServiceAccount) lives, not under enforcement; the cluster admin lets
    the bot deploy models to the team's namespace. mallory is no editor there."""
    name = "ci-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    try:
        core.create_namespaced_service_account(name, {"metadata": {"name": BOT}})
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture
def approval_policy(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel
) -> Iterator[str]:
    """High risk needs a ModelApproval by a member of devmlops:approvers (mallory is one) other than the requester."""
    with approval_required(admin, stack, enforced_namespace, attack_model, f"r2-4e-{enforced_namespace}") as name:
        yield name


@pytest.mark.parametrize("way", sorted(WAYS))
def test_an_approver_who_runs_workloads_as_the_requesting_service_account_is_no_second_person(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    ci_namespace: str,
    approval_policy: str,
    attack_model: SignedModel,
    way: str,
) -> None:
    namespace, rule, act = enforced_namespace, *WAYS[way]
    rbac, core = k8s.RbacAuthorizationV1Api(admin), k8s.CoreV1Api(admin)
    bot = {"kind": "ServiceAccount", "name": BOT, "namespace": ci_namespace}
    bind_role(rbac, namespace, "release-bot-deploys", EDITOR_ROLE, bot)
    rbac.create_namespaced_role(ci_namespace, {"metadata": {"name": f"narrow-{way}"}, "rules": [rule]})
    bind_role(rbac, ci_namespace, f"mallory-{way}", f"narrow-{way}", user_subject("mallory"))
    # Her workload runs as the bot (the namespace is not enforced, and it serves no model: nothing stops it).
    eventually(lambda: _tried(act, mallory, ci_namespace), what=f"mallory's {way} running as the bot")
    # Inside it she holds the bot's token (no kubelet here: the cluster admin mints the same token for the test).
    token = core.create_namespaced_service_account_token(BOT, ci_namespace, {"spec": {"expirationSeconds": 600}})
    with _as_token(mallory, token.status.token) as as_bot:
        create_md(as_bot, namespace, high_risk(attack_model))
    stored = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", "fraud"
    )
    requester = f"system:serviceaccount:{ci_namespace}:{BOT}"
    assert stored["metadata"]["annotations"]["devmlops.io/requested-by"] == requester
    eventually(lambda: phase(admin, namespace) == "AwaitingApproval", what="AwaitingApproval")
    message = denied(approve, mallory, namespace, approval("mallory-approves", attack_model.digest))
    assert f"'mallory' can act as the requester {requester!r}" in message, message


def test_a_request_made_by_impersonating_the_bot_is_the_bots_and_its_impersonator_no_second_person(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    control_plane: ControlPlane,
    enforced_namespace: str,
    approval_policy: str,
    attack_model: SignedModel,
) -> None:
    """Not a hole (it passed before the fixes of this round): what the API server stamps when mallory impersonates the
    release bot (Impersonate-User, as the built-in edit role lets her), and what she cannot add to it. The requester is
    the bot; she may impersonate it, so her approval is refused; approving as the bot is refused (the
    bot requested it); and RBAC refuses her an approvers' group on the bot's identity (Impersonate-Group)."""
    namespace = enforced_namespace
    rbac, core = k8s.RbacAuthorizationV1Api(admin), k8s.CoreV1Api(admin)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": BOT}})
    bot = {"kind": "ServiceAccount", "name": BOT, "namespace": namespace}
    bind_role(rbac, namespace, "release-bot-deploys", EDITOR_ROLE, bot)
    rules = [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]}]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "impersonate-sas"}, "rules": rules})
    bind_role(rbac, namespace, "mallory-impersonates", "impersonate-sas", user_subject("mallory"))
    requester = f"system:serviceaccount:{namespace}:{BOT}"
    with api_client(control_plane.kubeconfig("mallory")) as as_bot:
        as_bot.set_default_header("Impersonate-User", requester)
        eventually(
            lambda: _tried(lambda c, ns: create_md(c, ns, high_risk(attack_model)), as_bot, namespace),
            what="impersonation",
        )
        stored = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments", "fraud"
        )
        assert stored["metadata"]["annotations"]["devmlops.io/requested-by"] == requester
        eventually(lambda: phase(admin, namespace) == "AwaitingApproval", what="AwaitingApproval")
        message = denied(approve, mallory, namespace, approval("mallory-approves", attack_model.digest))
        assert f"'mallory' can act as the requester {requester!r} (may impersonate serviceaccounts" in message, message
        message = denied(approve, as_bot, namespace, approval("bot-approves", attack_model.digest))
        assert f"approver {requester!r} requested this ModelDeployment" in message, message
        as_bot.set_default_header("Impersonate-Group", "devmlops:approvers")
        forbidden_by_rbac(approve, as_bot, namespace, approval("bot-in-approvers", attack_model.digest))


@pytest.fixture
def ci_bots(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, new_namespace: Callable[..., str], enforced_namespace: str
) -> Iterator[tuple[str, k8s.ApiClient, k8s.ApiClient]]:
    """A CI namespace mallory edits (with the token rights of the built-in edit role), its release bot (which deploys
    to the team's namespace) and its approver bot; yields the namespace and clients with tokens she minted for both."""
    ci = new_namespace("ci", enforced=False)
    rbac, core = k8s.RbacAuthorizationV1Api(admin), k8s.CoreV1Api(admin)
    rules = [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]
    rbac.create_namespaced_role(ci, {"metadata": {"name": "sa-tokens"}, "rules": rules})
    bind_role(rbac, ci, "mallory-tokens", "sa-tokens", user_subject("mallory"))
    for binding, account in (("release-bot-deploys", BOT), ("approver-bot-approves", "approver-bot")):
        bind_role(
            rbac, enforced_namespace, binding, EDITOR_ROLE, {"kind": "ServiceAccount", "name": account, "namespace": ci}
        )
    clients = []
    for account in (BOT, "approver-bot"):
        core.create_namespaced_service_account(ci, {"metadata": {"name": account}})
        minted = eventually(
            lambda account=account: _minted(k8s.CoreV1Api(mallory), ci, account), what=f"a token for {account}"
        )
        clients.append(_as_token(mallory, minted))
    with clients[0] as release_bot, clients[1] as approver_bot:
        yield ci, release_bot, approver_bot


def _minted(core: k8s.CoreV1Api, namespace: str, account: str) -> str | None:
    try:
        return str(core.create_namespaced_service_account_token(account, namespace, {"spec": {}}).status.token)
    except k8s.ApiException as exc:
        if exc.status == 403:
            return None
        raise


def test_two_service_accounts_of_one_namespace_are_no_four_eyes(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    ci_bots: tuple[str, k8s.ApiClient, k8s.ApiClient],
    attack_model: SignedModel,
) -> None:
    namespace, (ci, release_bot, approver_bot) = enforced_namespace, ci_bots
    message = bot_approval_refused(admin, stack, namespace, ci, release_bot, approver_bot, attack_model)
    assert f"whoever edits namespace {ci} can act as both" in message, message


def bot_approval_refused(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    namespace: str,
    ci: str,
    requester: k8s.ApiClient,
    approver_bot: k8s.ApiClient,
    model: SignedModel,
) -> str:
    """``requester`` creates the high-risk model in ``namespace``, where a policy names the approver bot of ``ci`` as
    its approver, and the bot approves it: devmlops's denial (the test fails if it was admitted)."""
    approver = f"system:serviceaccount:{ci}:approver-bot"
    with approval_required(admin, stack, namespace, model, f"bots-{namespace}", {"users": [approver]}):
        create_md(requester, namespace, high_risk(model))
        eventually(lambda: phase(admin, namespace) == "AwaitingApproval", what="AwaitingApproval")
        return denied(approve, approver_bot, namespace, approval("bot-approves", model.digest))


def _tried(act: Any, client: k8s.ApiClient, namespace: str) -> bool:
    """Whether ``act`` went through (RBAC bindings take a moment to reach the authorizer)."""
    try:
        act(client, namespace)
    except k8s.ApiException as exc:
        if exc.status == 403:
            return False
        raise
    return True


# -- 3. a team's glob against a long URI ------------------------------------------------------------------------------

SLOW_GLOB = "https://models.example.com/prod/" + "**a" * 4 + "**b"  # inside the cluster's glob: a team may narrow
LONG_URI = "https://models.example.com/prod/" + "a" * 340  # some 20 s of backtracking before the fix (the limit: 10)


def test_a_team_glob_does_not_stall_the_webhook(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    namespace = enforced_namespace
    allow = {"images": list(ALLOWED_IMAGES), "storageUris": [PROD]}
    with trusting(admin, stack, namespace, attack_model, policy=policy_name(namespace), allow=allow):
        plant(mallory, stack, namespace, team_policy("narrower", allow={"storageUris": [SLOW_GLOB]}))
        answers: dict[str, Any] = {}

        def attack() -> None:
            try:
                create_model_deployment(mallory, namespace, _at("fraud", attack_model, LONG_URI, KSERVE))
            except k8s.ApiException as exc:
                answers["attack"] = exc

        started = time.monotonic()
        attacking = threading.Thread(target=attack)
        attacking.start()
        time.sleep(1)
        # Meanwhile, any other review (here a bare Pod in the enforced namespace, a plain denial) is answered.
        probe: Any = pod("bystander", pod_spec(ALPINE))
        message = devmlops_denial(k8s.CoreV1Api(mallory).create_namespaced_pod, namespace, probe, dry_run="All")
        assert message, "a bare Pod in an enforced namespace is denied"
        attacking.join(timeout=60)
        elapsed = time.monotonic() - started
        error = answers.get("attack")
        assert error is not None, "admitted, but the URI is outside the team's glob"
        assert error.status == 403, f"expected devmlops's denial, got {error.status}: {error.body}"
        assert "spec.model.uri" in (error.body or ""), error.body
        assert elapsed < 8, f"the attack's own review took {elapsed:.1f}s"
