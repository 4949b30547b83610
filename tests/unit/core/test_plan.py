"""The verification plan picks, of several signatures (an OCI model's referrers), the one that verifies."""

from __future__ import annotations

from devmlops.core.plan import VerificationPlan
from devmlops.core.policy import compile_policy
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle
from tests.unit.core.test_gates import policy

OTHER = "sha256:" + "ef" * 32


def test_the_plan_takes_the_first_bundle_that_verifies_for_the_admitted_digest() -> None:
    policies = [compile_policy(policy())]
    pushed_first = [bundle("mallory"), bundle("release", OTHER), bundle("release")]
    plan = VerificationPlan.for_bundles(pushed_first, DIGEST, policies, FakeVerifier())
    assert plan.bundle == bundle("release")  # not her referrer, not a release signature of other bytes
    assert plan.verify_signature(FakeVerifier()).digest == DIGEST


def test_with_no_bundle_that_verifies_the_plan_holds_the_first_and_the_pod_refuses() -> None:
    policies = [compile_policy(policy())]
    plan = VerificationPlan.for_bundles([bundle("mallory"), bundle("eve")], DIGEST, policies, FakeVerifier())
    assert plan.bundle == bundle("mallory")
    assert VerificationPlan.for_bundles([], DIGEST, policies, FakeVerifier()).bundle == ""
