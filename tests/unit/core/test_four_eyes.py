"""Four eyes (issue 13, property 7), in the pure core: who the requester is, what the mutating webhook stamps on an
approval, what the approval review checks, and the approval gate's check of the approver where the model is served."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from devmlops.core.approvalreview import (
    APPROVAL_STAMPS,
    APPROVED_BY,
    APPROVED_SPEC,
    APPROVED_UID,
    APPROVER_GROUPS,
    requester_account,
    review_approval,
)
from devmlops.core.evidence import ApprovalState, Evidence
from devmlops.core.gates.approval import check_approval
from devmlops.core.gates.compliance import effective_tier
from devmlops.core.gates.requester import (
    REQUESTED_BY,
    REQUESTER_GROUPS,
    check_requester,
    read_groups,
    recorded_groups,
    requester_stamps,
    served_fingerprint,
)
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.mutation import stamp_patch
from devmlops.core.policy import compile_policy
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from tests.unit.core.fakes import md_update

PEM = "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----"
DIGEST = "sha256:" + "ab" * 32
UID = "0b7d3a8e-1111-4c2e-9d55-5f1f2a000001"
NOW = "2026-11-30T12:00:00+00:00"
POLICY = compile_policy(
    {
        "metadata": {"name": "eu"},
        "spec": {
            "authorities": [{"name": "k", "key": {"publicKey": PEM}}],
            "compliance": {"approvers": {"groups": ["approvers"]}, "tiers": {"high": {"requireApproval": True}}},
        },
    }
)


def _requester(request: AdmissionRequest) -> str:
    return requester_stamps(request)[REQUESTED_BY]


def model(requester: str = "alice", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
        "runtime": {"kind": "kserve", "replicas": 1},
        "signature": {"configMapKeyRef": {"name": "evidence", "key": "model.sig"}},
    }
    body.update(spec)
    return {
        "metadata": {
            "name": "fraud",
            "namespace": "ml",
            "uid": UID,
            "labels": {"devmlops.io/eu-ai-act-risk": "high"},
            "annotations": {REQUESTED_BY: requester},
        },
        "spec": body,
    }


def changed(path: str, value: Any) -> dict[str, Any]:
    obj = model()
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return obj


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.runtime.replicas", 5),
        ("metadata.labels", {"team": "payments", "devmlops.io/eu-ai-act-risk": "high"}),
        ("metadata.annotations", {REQUESTED_BY: "alice", "note": "for the sale"}),
    ],
    ids=["scaling", "relabelling", "annotating"],
)
def test_scaling_or_relabelling_keeps_the_recorded_requester(path: str, value: Any) -> None:
    assert _requester(md_update(model(), changed(path, value), "mallory")) == "alice"
    assert served_fingerprint(changed(path, value)) == served_fingerprint(model())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.model.uri", "s3://mallory/fraud"),
        ("spec.model.digest", "sha256:" + "cd" * 32),
        ("spec.model.format", "onnx"),
        ("spec.signature", {"inline": "{}"}),
        ("spec.additionalSignatures", [{"inline": "{}"}]),
        ("spec.sbom", {"document": {"inline": "{}"}}),
        ("spec.runtime.image", "registry.example.com/mallory/server:1"),
        ("spec.runtime.servingRuntime", "mallory-runtime"),
        ("spec.runtime.resources", {"limits": {"cpu": "3"}}),
        ("spec.rollout", {"strategy": "canary", "canary": {"trafficPercent": 50}}),
    ],
)
def test_changing_what_is_served_makes_the_changer_the_requester(path: str, value: Any) -> None:
    assert _requester(md_update(model(), changed(path, value), "mallory")) == "mallory"
    assert served_fingerprint(changed(path, value)) != served_fingerprint(model())


def test_scaling_together_with_a_served_change_makes_the_changer_the_requester() -> None:
    new = changed("spec.model.uri", "s3://mallory/fraud")
    new["spec"]["runtime"]["replicas"] = 3
    assert _requester(md_update(model(), new, "mallory")) == "mallory"


def approval_request(
    user: str = "bob", groups: tuple[str, ...] = ("approvers",), annotations: dict[str, str] | None = None
) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelApproval"),
        operation="CREATE",
        namespace="ml",
        name="a",
        username=user,
        groups=groups,
        object={
            "metadata": {"name": "a", "annotations": annotations or {}},
            "spec": {"modelDeployment": "fraud", "digest": DIGEST},
        },
        old_object=None,
    )


def stamped(request: AdmissionRequest, target: dict[str, Any] | None) -> AdmissionRequest:
    """The request as the validating webhook receives it after the mutating webhook's patch."""
    assert request.object is not None
    obj = copy.deepcopy(dict(request.object))
    for op in stamp_patch(request, target=target):
        if op["path"] == "/metadata/annotations":
            obj["metadata"]["annotations"] = dict(op["value"])
        else:
            key = op["path"].removeprefix("/metadata/annotations/").replace("~1", "/").replace("~0", "~")
            obj["metadata"]["annotations"][key] = op["value"]
    return dataclasses.replace(request, object=obj)


def test_a_new_approval_is_stamped_with_the_request_and_the_target_whatever_the_approver_wrote() -> None:
    forged = {
        APPROVED_BY: "carol",
        APPROVED_UID: "another",
        APPROVER_GROUPS: json.dumps(["system:masters"]),
        APPROVED_SPEC: "sha256:" + "0" * 64,
    }
    request = stamped(approval_request("bob", ("approvers", "system:authenticated"), forged), model())
    assert request.object is not None
    annotations = request.object["metadata"]["annotations"]
    assert annotations == {
        APPROVED_BY: "bob",
        APPROVED_UID: UID,
        APPROVER_GROUPS: '["approvers","system:authenticated"]',
        APPROVED_SPEC: served_fingerprint(model()),
    }
    assert review_approval(request, model(), [POLICY], now=NOW).allowed


def test_without_a_target_the_approval_is_stamped_as_binding_nothing_and_refused() -> None:
    request = stamped(approval_request(), None)
    assert request.object is not None
    assert request.object["metadata"]["annotations"][APPROVED_UID] == ""
    assert "does not exist" in review_approval(request, None, [POLICY], now=NOW).message


@pytest.mark.parametrize("key", APPROVAL_STAMPS)
def test_an_approval_whose_stamps_are_not_the_expected_ones_is_refused(key: str) -> None:
    request = stamped(approval_request(), model())
    assert request.object is not None
    request.object["metadata"]["annotations"][key] = "forged"
    message = review_approval(request, model(), [POLICY], now=NOW).message
    assert f"annotation {key}: got 'forged', expected" in message
    assert "the devmlops mutating webhook stamps it" in message


def test_an_approval_without_stamps_is_refused_so_a_missing_mutating_webhook_fails_closed() -> None:
    message = review_approval(approval_request(), model(), [POLICY], now=NOW).message
    assert "annotation devmlops.io/approved-by: got None, expected 'bob'" in message


@pytest.mark.parametrize("key", APPROVAL_STAMPS)
def test_the_stamps_of_an_approval_never_change(key: str) -> None:
    created = stamped(approval_request(), model())
    assert created.object is not None
    old = copy.deepcopy(dict(created.object))
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][key] = "edited"
    update = AdmissionRequest(
        uid="u2",
        kind=created.kind,
        operation="UPDATE",
        namespace="ml",
        name="a",
        username="mallory",
        groups=(),
        object=new,
        old_object=old,
    )
    message = review_approval(update, model(), [POLICY], now=NOW).message
    assert f"annotation {key}: got 'edited', expected" in message
    assert "(unchanged): it binds the approval" in message


def test_the_approval_gate_checks_the_stamped_approver_against_the_policy_of_now() -> None:
    tier = effective_tier(model(), [POLICY], None)
    approved = ApprovalState(approved=True, approver="bob", name="a", groups=("approvers",))
    assert check_approval(parse_model_deployment(model()), POLICY, Evidence(approval=approved), tier).outcome == "pass"
    narrowed = compile_policy(
        {
            "metadata": {"name": "eu"},
            "spec": {
                "authorities": [{"name": "k", "key": {"publicKey": PEM}}],
                "compliance": {
                    "approvers": {"groups": ["risk-officers"]},
                    "tiers": {"high": {"requireApproval": True}},
                },
            },
        }
    )
    result = check_approval(parse_model_deployment(model()), narrowed, Evidence(approval=approved), tier)
    assert result.outcome == "fail"
    assert result.reason == (
        "ModelApproval a: approver 'bob' (groups ['approvers'] when approving) is not an approver under this policy now"
    )
    missing = check_approval(
        parse_model_deployment(model()), POLICY, Evidence(approval=ApprovalState(approved=False, problem="why")), tier
    )
    assert missing.reason.endswith("by a second person: why")


def test_unreadable_stamped_groups_are_no_groups() -> None:
    assert read_groups('["a","b"]') == ("a", "b")
    assert read_groups("a,b") == ()
    assert read_groups('{"a": 1}') == ()
    assert read_groups(None) == ()
    assert read_groups('["a", 1]') == ()


def test_groups_are_recorded_only_as_a_json_list_of_strings() -> None:
    """None (not recorded) is what four eyes refuses a ServiceAccount approver on; [] is a requester without groups."""
    assert recorded_groups('["a","b"]') == ("a", "b")
    assert recorded_groups("[]") == ()
    for unrecorded in (None, "", "a,b", '{"a": 1}', '["a", 1]', "null"):
        assert recorded_groups(unrecorded) is None, unrecorded


def test_a_service_account_of_the_models_namespace_is_no_second_person() -> None:
    """Every editor of the namespace can act as its ServiceAccounts (the built-in edit role creates their tokens and
    impersonates them), the requester among them: even where a policy names one as an approver, it cannot approve a
    model of that namespace. A ServiceAccount of another namespace can."""
    own = "system:serviceaccount:ml:release-approver"
    other = "system:serviceaccount:approvals:release-approver"
    names_both = compile_policy(
        {
            "metadata": {"name": "eu"},
            "spec": {
                "authorities": [{"name": "k", "key": {"publicKey": PEM}}],
                "compliance": {"approvers": {"users": [own, other]}, "tiers": {"high": {"requireApproval": True}}},
            },
        }
    )
    refused = review_approval(stamped(approval_request(own, ()), model()), model(), [names_both], now=NOW)
    assert not refused.allowed
    assert f"the approver {own!r} is a ServiceAccount of namespace ml" in refused.message
    assert "not a second person" in refused.message
    assert review_approval(stamped(approval_request(other, ()), model()), model(), [names_both], now=NOW).allowed


def test_two_service_accounts_of_one_namespace_are_no_four_eyes() -> None:
    """Second attack round: a release bot of the CI namespace requested the model and that namespace's approver bot
    approved it; whoever edits the CI namespace acts as both, though neither bot may act as the other (what the
    webhook asks the API server). Refused when approving and where the model is served. So is a ServiceAccount of
    another namespace (edit-role review): one person who edits both namespaces acts as both, and no access review can
    ask that. A person still approves."""
    bot, approver_bot = "system:serviceaccount:ci:release-bot", "system:serviceaccount:ci:approver-bot"
    elsewhere = "system:serviceaccount:approvals:approver-bot"
    names_them = compile_policy(
        {
            "metadata": {"name": "eu"},
            "spec": {
                "authorities": [{"name": "k", "key": {"publicKey": PEM}}],
                "compliance": {
                    "approvers": {"users": [approver_bot, elsewhere, "bob"]},
                    "tiers": {"high": {"requireApproval": True}},
                },
            },
        }
    )
    target = model(bot)
    refused = review_approval(stamped(approval_request(approver_bot, ()), target), target, [names_them], now=NOW)
    assert not refused.allowed
    assert f"the approver {approver_bot!r} and the requester {bot!r} are both ServiceAccounts" in refused.message
    assert "whoever edits namespace ci can act as both" in refused.message
    other = review_approval(stamped(approval_request(elsewhere, ()), target), target, [names_them], now=NOW)
    assert not other.allowed
    assert "whoever edits namespaces ci and approvals can act as both" in other.message
    assert review_approval(stamped(approval_request("bob", ()), target), target, [names_them], now=NOW).allowed


def test_an_approval_naming_the_generation_it_read_is_refused_once_the_model_changed() -> None:
    """The approver may write the generation they reviewed: a change just before the approval (the same digest,
    another runtime) is then not approved unseen."""
    read = {**model(), "metadata": {**model()["metadata"], "generation": 3}}
    changed = {**read, "metadata": {**read["metadata"], "generation": 4}}
    request = stamped(approval_request(), changed)
    assert request.object is not None
    request.object["spec"]["generation"] = 3
    refused = review_approval(request, changed, [POLICY], now=NOW)
    assert not refused.allowed
    assert "spec.generation: got 3, but ModelDeployment fraud is at generation 4" in refused.message
    request.object["spec"]["generation"] = 4
    assert review_approval(request, changed, [POLICY], now=NOW).allowed


@pytest.mark.parametrize(
    ("requester", "account"),
    [
        ("system:serviceaccount:ml:release-bot", ("ml", "release-bot")),
        ("system:serviceaccount:ci:deployer", ("ci", "deployer")),
        ("alice", None),
        ("system:serviceaccount:ml", None),
        ("system:serviceaccount::bot", None),
        ("system:serviceaccounts:ml", None),  # a group's name, never a user's
        ("", None),
    ],
)
def test_the_requester_account_is_read_from_a_service_accounts_username_only(
    requester: str, account: tuple[str, str] | None
) -> None:
    assert requester_account(requester) == account


def test_an_approver_who_can_act_as_the_requesting_service_account_is_no_second_person() -> None:
    """A model the release bot (a ServiceAccount) requested may have been asked for by anyone who can act as the bot:
    the webhook asks the API server (``acts_as``) and the review refuses that approver, naming how; an approver who
    cannot act as it approves as before."""
    bot = "system:serviceaccount:ml:release-bot"
    target = model(requester=bot)
    request = stamped(approval_request("mallory", ("approvers",)), target)
    how = "may create pods in namespace ml"
    refused = review_approval(request, target, [POLICY], now=NOW, acts_as=how)
    assert not refused.allowed
    assert f"'mallory' can act as the requester {bot!r} ({how})" in refused.message
    assert "not a second person" in refused.message
    assert review_approval(request, target, [POLICY], now=NOW).allowed


def test_the_requesters_groups_are_stamped_kept_and_checked_like_the_requester() -> None:
    """From the request that set what is served; kept by a relabel; any other value refused. A model stamped before
    groups were recorded keeps none, and none may be added to it but by a change of what is served."""
    created = dataclasses.replace(md_update(model(), model()), operation="CREATE", old_object=None)
    created = dataclasses.replace(created, groups=("team", "system:authenticated", "team"))
    assert requester_stamps(created) == {REQUESTED_BY: "mallory", REQUESTER_GROUPS: '["system:authenticated","team"]'}

    def relabelled(base: dict[str, Any], groups: str | None) -> dict[str, Any]:
        new = copy.deepcopy(base)
        new["metadata"]["labels"] = {"x": "1"}
        if groups is not None:
            new["metadata"]["annotations"][REQUESTER_GROUPS] = groups
        return new

    stamped = relabelled(model(), '["a"]')
    assert requester_stamps(md_update(stamped, relabelled(stamped, None))) == {
        REQUESTED_BY: "alice",
        REQUESTER_GROUPS: '["a"]',
    }
    refused = check_requester(md_update(stamped, relabelled(stamped, "[]")))
    assert refused.blocking
    assert f"annotation {REQUESTER_GROUPS}: got '[]', expected '[\"a\"]'" in refused.reason
    unstamped = model()  # requested-by only, as before the groups were recorded
    assert requester_stamps(md_update(unstamped, relabelled(unstamped, None)))[REQUESTER_GROUPS] == ""
    assert check_requester(md_update(unstamped, relabelled(unstamped, None))).outcome == "pass"
    assert check_requester(md_update(unstamped, relabelled(unstamped, '["system:masters"]'))).blocking
