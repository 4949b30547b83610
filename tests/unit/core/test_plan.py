"""The verification plan picks, of several signatures (an OCI model's referrers), the one that verifies."""

from __future__ import annotations

import pytest

from devmlops.core.decision import decide
from devmlops.core.plan import VerificationPlan
from devmlops.core.policy import PolicySet, compile_policy
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle
from tests.unit.core.test_gates import PEM, evidence, policy, request, spec

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


@pytest.mark.xfail(
    strict=True,
    reason="k-of-n (threshold >= 2) signatures come in one bundle each (spec.signature, spec.additionalSignatures), "
    "but the verification plan carries one bundle: a model admitted with 2 of 2 distinct signers can never start "
    "(fail closed). The fix is a plan with several bundles (format, storage initializer, the webhook's comparison).",
)
def test_a_model_admitted_with_two_of_two_signers_gets_a_plan_its_storage_initializer_accepts() -> None:
    two = {
        "authorities": [
            {"name": "release", "key": {"publicKey": PEM}},
            {"name": "security", "key": {"publicKey": PEM.replace("MFk=", "MFo=")}},
        ],
        "threshold": 2,
    }
    policies = [compile_policy(policy(**two))]
    bundles = [bundle("release"), bundle("security")]
    assert decide(request(spec()), PolicySet(tuple(policies)), evidence(*bundles), FakeVerifier()).allowed
    plan = VerificationPlan.for_bundles(bundles, DIGEST, policies, FakeVerifier())
    assert plan.verify_signature(FakeVerifier()).digest == DIGEST
