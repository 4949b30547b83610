"""Whether an approver may act as the ServiceAccount that requested a model: one SubjectAccessReview per way of acting
as it (impersonation, a token, a Pod, a token Secret, a workload), the first allowed named; an authorizer that does
not answer refuses (four eyes, gates review)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kubecache import ClusterCaches
from devmlops.errors import EvidenceUnavailableError


class Authorizer:
    """Answers SubjectAccessReviews from a set of (verb, resource, subresource) allowed; records what was asked."""

    def __init__(self, allowed: set[tuple[str, str, str]], *, fail: bool = False) -> None:
        self.allowed, self.fail, self.asked = allowed, fail, []  # type: ignore[var-annotated]

    def create_subject_access_review(self, body: k8s.V1SubjectAccessReview, **_: Any) -> k8s.V1SubjectAccessReview:
        if self.fail:
            raise ApiException(status=500)
        spec = body.spec
        attributes = spec.resource_attributes
        self.asked.append((spec.user, tuple(spec.groups), attributes))
        key = (attributes.verb, attributes.resource, attributes.subresource or "")
        body.status = k8s.V1SubjectAccessReviewStatus(allowed=key in self.allowed)
        return body


def caches(authorizer: Authorizer) -> ClusterCaches:
    found = ClusterCaches(k8s.ApiClient())
    found._authorization = authorizer  # type: ignore[assignment]
    return found


def test_an_editor_who_may_create_pods_there_may_act_as_its_service_accounts() -> None:
    authorizer = Authorizer({("create", "pods", "")})
    how = caches(authorizer).may_act_as("mallory", ("approvers",), "ml", "release-bot")
    assert how == "may create pods in namespace ml"
    user, groups, first = authorizer.asked[0]
    assert (user, groups) == ("mallory", ("approvers",))  # asked with the approver's groups, which grant roles too
    assert (first.verb, first.resource, first.name, first.namespace) == (
        "impersonate",
        "serviceaccounts",
        "release-bot",
        "ml",
    )


def test_minting_the_accounts_token_is_named_with_the_account() -> None:
    authorizer = Authorizer({("create", "serviceaccounts", "token")})
    how = caches(authorizer).may_act_as("mallory", (), "ml", "release-bot")
    assert how == "may create serviceaccounts/token release-bot in namespace ml"


def test_an_approver_with_no_way_to_act_as_it_is_told_apart() -> None:
    authorizer = Authorizer(set())
    assert caches(authorizer).may_act_as("carol", ("approvers",), "ml", "release-bot") == ""
    asked = {(a.verb, a.group, a.resource, a.subresource) for _u, _g, a in authorizer.asked}
    runs_pods = [
        ("", "pods"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ]
    assert asked == {
        ("impersonate", "", "serviceaccounts", None),
        ("create", "", "serviceaccounts", "token"),
        *((verb, group, resource, None) for group, resource in runs_pods for verb in ("create", "update", "patch")),
        ("create", "", "pods", "exec"),
        ("create", "", "pods", "attach"),
        ("patch", "", "pods", "ephemeralcontainers"),
        ("update", "", "pods", "ephemeralcontainers"),
        ("create", "", "secrets", None),
        ("get", "", "secrets", None),
        ("list", "", "secrets", None),
    }


@pytest.mark.parametrize(
    ("allowed", "how"),
    [
        (("create", "cronjobs", ""), "may create cronjobs in namespace ml"),
        (("patch", "statefulsets", ""), "may patch statefulsets in namespace ml"),
        (("update", "pods", ""), "may update pods in namespace ml"),
        (("create", "pods", "exec"), "may create pods/exec in namespace ml"),
        (("patch", "pods", "ephemeralcontainers"), "may patch pods/ephemeralcontainers in namespace ml"),
        (("list", "secrets", ""), "may list secrets in namespace ml"),
    ],
)
def test_every_way_to_run_as_the_account_is_asked(allowed: tuple[str, str, str], how: str) -> None:
    """Second attack round: an approver who may only create CronJobs where the requesting bot lives ran one as the bot,
    which requested her model, and her approval was admitted (six ways were asked; a CronJob, a StatefulSet, a
    patched Pod or workload, exec, attach, an ephemeral container and a read token Secret were not)."""
    assert caches(Authorizer({allowed})).may_act_as("mallory", ("approvers",), "ml", "release-bot") == how


def test_an_authorizer_that_does_not_answer_refuses() -> None:
    with pytest.raises(EvidenceUnavailableError, match="may act as ServiceAccount ml/release-bot"):
        caches(Authorizer(set(), fail=True)).may_act_as("carol", (), "ml", "release-bot")
