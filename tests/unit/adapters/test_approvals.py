"""``find_approval``: an approval counts where the model is served only for the ModelDeployment it was given for (uid),
as it was then (digest and served spec), and only while the policies demanding approval still name its approver."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from devmlops.adapters.approvals import find_approval
from devmlops.core.approvalreview import APPROVED_BY, APPROVED_SPEC, APPROVED_UID, APPROVER_GROUPS, groups_value
from devmlops.core.gates.compliance import effective_tier
from devmlops.core.gates.requester import REQUESTED_BY, served_fingerprint
from devmlops.core.policy import Policy, compile_policy

PEM = "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----"
DIGEST = "sha256:" + "ab" * 32
UID = "0b7d3a8e-1111-4c2e-9d55-5f1f2a000001"
NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def policy(**approvers: list[str]) -> Policy:
    return compile_policy(
        {
            "metadata": {"name": "eu"},
            "spec": {
                "authorities": [{"name": "k", "key": {"publicKey": PEM}}],
                "compliance": {
                    "approvers": approvers or {"groups": ["approvers"]},
                    "tiers": {"high": {"requireApproval": True}},
                },
            },
        }
    )


def model(uid: str = UID, requester: str = "alice", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
        "runtime": {"kind": "kserve", "replicas": 1},
    }
    body.update(spec)
    return {
        "metadata": {
            "name": "fraud",
            "namespace": "ml",
            "uid": uid,
            "labels": {"devmlops.io/eu-ai-act-risk": "high"},
            "annotations": {REQUESTED_BY: requester},
        },
        "spec": body,
    }


def approval(
    approver: str = "bob",
    groups: tuple[str, ...] = ("approvers",),
    given_for: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    target = given_for or model()
    return {
        "metadata": {
            "name": f"{approver}-approves",
            "namespace": "ml",
            "annotations": {
                APPROVED_BY: approver,
                APPROVER_GROUPS: groups_value(groups),
                APPROVED_UID: target["metadata"]["uid"],
                APPROVED_SPEC: served_fingerprint(target),
            },
        },
        "spec": {"modelDeployment": "fraud", "digest": DIGEST, **spec},
    }


def find(approvals: list[dict[str, Any]], served: dict[str, Any], *policies: Policy) -> Any:
    chosen = list(policies) or [policy()]
    return find_approval(approvals, served, NOW, judged_by=lambda: (chosen, effective_tier(served, chosen, None)))


def test_an_approval_given_for_this_model_deployment_as_it_is_counts() -> None:
    state = find([approval()], model())
    assert (state.approved, state.approver, state.groups) == (True, "bob", ("approvers",))


def test_scaling_after_the_approval_keeps_it() -> None:
    scaled = model()
    scaled["spec"]["runtime"]["replicas"] = 4
    assert find([approval()], scaled).approved


def test_an_approval_of_a_deleted_model_deployment_does_not_count_for_one_recreated_under_its_name() -> None:
    state = find([approval()], model(uid="0b7d3a8e-2222-4c2e-9d55-5f1f2a000002", requester="mallory"))
    assert not state.approved
    assert "was given for uid 0b7d3a8e-1111" in state.problem
    assert "it was recreated since" in state.problem


def test_an_approval_does_not_cover_a_change_of_what_is_served() -> None:
    for change in (
        {"model": {"name": "fraud", "uri": "s3://mallory/fraud", "digest": DIGEST}},
        {"runtime": {"kind": "kserve", "image": "registry.example.com/mallory/server:1"}},
        {"signature": {"inline": "{}"}},
    ):
        state = find([approval()], model(requester="mallory", **change))
        assert not state.approved, change
        assert "was given before what is served changed" in state.problem


def test_an_approval_of_another_digest_does_not_count() -> None:
    state = find([approval(digest="sha256:" + "cd" * 32)], model())
    assert not state.approved
    assert "approves sha256:cdcdcdcdcdcd..., not sha256:abababababab..." in state.problem


def test_the_requester_never_approves_their_own_model() -> None:
    assert not find([approval("alice")], model()).approved


def test_an_approver_the_policy_no_longer_names_does_not_count() -> None:
    state = find([approval()], model(), policy(groups=["risk-officers"]))
    assert not state.approved
    assert state.problem == (
        "ModelApproval bob-approves by bob: 'bob' (groups ['approvers']) is not an approver under eu now"
    )
    assert find([approval()], model(), policy(users=["bob"])).approved


def test_every_policy_demanding_approval_must_name_the_approver() -> None:
    other = compile_policy(
        {
            "metadata": {"name": "team"},
            "spec": {
                "authorities": [{"name": "k", "key": {"publicKey": PEM}}],
                "compliance": {"approvers": {"users": ["dana"]}, "tiers": {"high": {"requireApproval": True}}},
            },
        }
    )
    assert not find([approval()], model(), policy(), other).approved
    assert find([approval(), approval("dana", ())], model(), policy(users=["dana"]), other).approver == "dana"


def test_forged_or_missing_stamps_never_count() -> None:
    no_groups = approval()
    no_groups["metadata"]["annotations"][APPROVER_GROUPS] = "approvers"  # not the JSON list the webhook writes
    assert not find([no_groups], model()).approved
    for key in (APPROVED_BY, APPROVED_UID, APPROVED_SPEC):
        missing = copy.deepcopy(approval())
        del missing["metadata"]["annotations"][key]
        assert not find([missing], model()).approved, key


def test_an_expired_approval_does_not_count_and_a_later_valid_one_does() -> None:
    old = approval(expires="2026-11-01T00:00:00Z")
    state = find([old], model())
    assert not state.approved
    assert "expired at 2026-11-01T00:00:00Z" in state.problem
    assert find([old, approval("carol")], model()).approver == "carol"


def test_an_approval_by_a_service_account_of_the_models_namespace_does_not_count() -> None:
    """Any editor of namespace ml (the requester too) can act as its ServiceAccounts: not a second person, even
    where the policy names one (an approval given before this rule is not counted where the model is served)."""
    own = "system:serviceaccount:ml:release-approver"
    found = find([approval(own, ())], model(), policy(users=[own]))
    assert not found.approved
    assert "is a ServiceAccount of namespace ml" in found.problem
    other = "system:serviceaccount:approvals:release-approver"
    assert find([approval(other, ())], model(), policy(users=[other])).approved


def test_an_approval_by_a_service_account_of_a_service_accounts_request_does_not_count() -> None:
    """Second attack round: whoever edits namespace ci acts as both its release bot (the requester) and its approver
    bot: one person, where the model is served too (an approval given before the rule is not counted). The edit-role
    review: so does whoever edits ci and the approver bot's own namespace. A person's approval counts."""
    bot, approver_bot = "system:serviceaccount:ci:release-bot", "system:serviceaccount:ci:approver-bot"
    requested = model(requester=bot)
    found = find([approval(approver_bot, (), given_for=requested)], requested, policy(users=[approver_bot]))
    assert not found.approved
    assert "whoever edits namespace ci can act as both" in found.problem
    elsewhere = "system:serviceaccount:approvals:approver-bot"
    found = find([approval(elsewhere, (), given_for=requested)], requested, policy(users=[elsewhere]))
    assert not found.approved
    assert "whoever edits namespaces ci and approvals can act as both" in found.problem
    assert find([approval("bob", (), given_for=requested)], requested, policy(users=["bob"])).approved
