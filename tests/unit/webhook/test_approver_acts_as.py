"""The webhook asks whether a new approval's approver may act as the ServiceAccount that requested the model, and
whether the requester may act as the ServiceAccount that approves it, and only then: a person's approval of a model a
person requested, or an approval's update, asks nothing (four eyes, gates review, edit-role review)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from devmlops.core.approvalreview import approval_stamps
from devmlops.core.policy import PolicySet, compile_policy
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.webhook.service import AdmissionService
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle

BOT = "system:serviceaccount:ml:release-bot"
POLICY = compile_policy(
    {
        "metadata": {"name": "eu", "resourceVersion": "1"},
        "spec": {
            "authorities": [{"name": "release", "key": {"publicKey": "-----BEGIN PUBLIC KEY-----"}}],
            "compliance": {"approvers": {"groups": ["approvers"]}, "tiers": {"high": {"requireApproval": True}}},
        },
    }
)


def target(requester: str, groups: str | None = "[]") -> dict[str, Any]:
    stamps = {"devmlops.io/requested-by": requester}
    if groups is not None:
        stamps["devmlops.io/requester-groups"] = groups
    return {
        "metadata": {
            "name": "fraud",
            "namespace": "ml",
            "uid": "u-1",
            "generation": 1,
            "labels": {"devmlops.io/eu-ai-act-risk": "high"},
            "annotations": stamps,
        },
        "spec": {
            "model": {"name": "fraud", "uri": "s3://m/fraud", "digest": DIGEST},
            "runtime": {"kind": "kserve"},
            "signature": {"configMapKeyRef": {"name": "sig", "key": "model.sig"}},
        },
    }


class Lookup:
    def __init__(self, requester: str, ways: str) -> None:
        self.target, self.ways, self.asked = target(requester), ways, []  # type: ignore[var-annotated]

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        return {"model.sig": bundle("release")} if (namespace, name) == ("ml", "sig") else None

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return {}

    def model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.target if (namespace, name) == ("ml", "fraud") else None

    def approvals(self) -> list[dict[str, Any]]:
        return []

    def may_act_as(self, user: str, groups: tuple[str, ...], namespace: str, account: str) -> str:
        self.asked.append((user, tuple(groups), namespace, account))
        return self.ways


def approval(lookup: Lookup, operation: str = "CREATE", approver: str = "mallory") -> AdmissionRequest:
    request = AdmissionRequest(
        uid="r",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelApproval"),
        operation=operation,
        namespace="ml",
        name="a",
        username=approver,
        groups=("approvers",),
        object={"metadata": {"name": "a"}, "spec": {"modelDeployment": "fraud", "digest": DIGEST}},
        old_object=None,
    )
    stamps = approval_stamps(request, lookup.model_deployment("ml", "fraud"))
    obj = {**request.object, "metadata": {"name": "a", "annotations": stamps}}  # type: ignore[dict-item]
    return dataclasses.replace(request, object=obj, old_object=obj if operation == "UPDATE" else None)


def service(lookup: Lookup) -> AdmissionService:
    return AdmissionService(policies=lambda: PolicySet((POLICY,)), lookup=lookup, verifier=FakeVerifier())  # type: ignore[arg-type]


def test_an_approver_who_may_act_as_the_requesting_account_is_refused() -> None:
    lookup = Lookup(BOT, "may create pods in namespace ml")
    decision = service(lookup).decide(approval(lookup))
    assert lookup.asked == [("mallory", ("approvers",), "ml", "release-bot")]
    assert not decision.allowed
    assert f"'mallory' can act as the requester {BOT!r} (may create pods in namespace ml)" in decision.message


def test_an_approver_who_may_not_is_a_second_person() -> None:
    lookup = Lookup(BOT, "")
    assert service(lookup).decide(approval(lookup)).allowed


def test_a_model_a_person_requested_asks_nothing() -> None:
    lookup = Lookup("alice", "may create pods in namespace ml")
    assert service(lookup).decide(approval(lookup)).allowed
    assert lookup.asked == []


def test_an_approvals_update_asks_nothing() -> None:
    lookup = Lookup(BOT, "may create pods in namespace ml")
    assert service(lookup).decide(approval(lookup, "UPDATE")).allowed
    assert lookup.asked == []


APPROVER_BOT = "system:serviceaccount:ci:approver-bot"


def test_a_service_account_the_requester_may_act_as_is_refused() -> None:
    lookup = Lookup("mallory", "may create serviceaccounts/token approver-bot in namespace ci")
    decision = service(lookup).decide(approval(lookup, approver=APPROVER_BOT))
    assert lookup.asked == [("mallory", ("system:authenticated",), "ci", "approver-bot")]
    assert not decision.allowed
    assert f"the requester 'mallory' may act as the approver {APPROVER_BOT!r} (may create" in decision.message


def test_a_service_account_the_requester_may_not_act_as_is_a_second_person() -> None:
    lookup = Lookup("alice", "")
    assert service(lookup).decide(approval(lookup, approver=APPROVER_BOT)).allowed
    assert lookup.asked == [("alice", ("system:authenticated",), "ci", "approver-bot")]


def test_the_requester_is_asked_about_in_the_groups_stamped_with_them() -> None:
    """Rights held through a group count (mallory edits the approvals namespace as an ML engineer)."""
    lookup = Lookup("mallory", "may impersonate serviceaccounts approver-bot in namespace ci")
    lookup.target = target("mallory", '["ml-engineers","system:authenticated"]')
    assert not service(lookup).decide(approval(lookup, approver=APPROVER_BOT)).allowed
    assert lookup.asked == [("mallory", ("ml-engineers", "system:authenticated"), "ci", "approver-bot")]


@pytest.mark.parametrize("groups", [None, "not json", '{"a": 1}', '["ml-engineers", 7]'])
def test_a_model_whose_requesters_groups_are_not_recorded_is_approved_by_no_service_account(
    groups: str | None,
) -> None:
    """Stamped before groups were recorded (None), or unreadable: asked about as any authenticated user, mallory's
    rights through a group went unseen and her bot's approval was admitted; now refused, asking nothing."""
    lookup = Lookup("mallory", "")
    lookup.target = target("mallory", groups)
    decision = service(lookup).decide(approval(lookup, approver=APPROVER_BOT))
    assert not decision.allowed
    assert "annotation devmlops.io/requester-groups of the ModelDeployment is missing or unreadable" in decision.message
    assert lookup.asked == []


def test_a_model_whose_requester_had_no_groups_is_asked_about() -> None:
    lookup = Lookup("alice", "")
    lookup.target = target("alice", "[]")
    assert service(lookup).decide(approval(lookup, approver=APPROVER_BOT)).allowed
    assert lookup.asked == [("alice", ("system:authenticated",), "ci", "approver-bot")]


def test_an_approver_refused_for_who_they_are_asks_nothing() -> None:
    """A ServiceAccount approving a ServiceAccount's request, or the requester approving, is refused whatever the API
    server would say: none of the access reviews (dozens for a ServiceAccount) is asked."""
    lookup = Lookup(BOT, "may create pods in namespace ml")
    decision = service(lookup).decide(approval(lookup, approver=APPROVER_BOT))
    assert not decision.allowed
    assert "are both ServiceAccounts" in decision.message
    assert lookup.asked == []
    lookup = Lookup("mallory", "may impersonate serviceaccounts approver-bot in namespace ci")
    decision = service(lookup).decide(approval(lookup, approver="mallory"))
    assert not decision.allowed
    assert "approver 'mallory' requested this ModelDeployment" in decision.message
    assert lookup.asked == []
