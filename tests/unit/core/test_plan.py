"""The verification plan picks, of several signatures (an OCI model's referrers, k-of-n bundles), the ones that
meet every admitting policy's threshold; its JSON form keeps the one-bundle shape existing children carry."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace

import pytest

from devmlops.core.decision import decide
from devmlops.core.plan import MAX_BUNDLES, VerificationPlan, served_plan
from devmlops.core.policy import PolicySet, compile_policy
from devmlops.core.ports import VerificationFailed
from devmlops.errors import InvalidInputError
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle
from tests.unit.core.test_gates import PEM, evidence, policy, request, spec

OTHER = "sha256:" + "ef" * 32
TWO_OF_TWO = {
    "authorities": [
        {"name": "release", "key": {"publicKey": PEM}},
        {"name": "security", "key": {"publicKey": PEM.replace("MFk=", "MFo=")}},
    ],
    "threshold": 2,
}


def test_the_plan_takes_the_first_bundle_that_verifies_for_the_admitted_digest() -> None:
    policies = [compile_policy(policy())]
    pushed_first = [bundle("mallory"), bundle("release", OTHER), bundle("release")]
    plan = VerificationPlan.for_bundles(pushed_first, DIGEST, policies, FakeVerifier())
    assert plan.bundles == (bundle("release"),)  # not her referrer, not a release signature of other bytes
    assert plan.verify_signature(FakeVerifier()).digest == DIGEST


def test_with_no_bundle_that_verifies_the_plan_holds_the_first_and_the_pod_refuses() -> None:
    policies = [compile_policy(policy())]
    plan = VerificationPlan.for_bundles([bundle("mallory"), bundle("eve")], DIGEST, policies, FakeVerifier())
    assert plan.bundles == (min(bundle("mallory"), bundle("eve"), key=_sha256),)  # the first in content order
    with pytest.raises(VerificationFailed, match="signature verified for 0 of 1 required authorities"):
        plan.verify_signature(FakeVerifier())
    assert VerificationPlan.for_bundles([], DIGEST, policies, FakeVerifier()).bundles == ()


def test_a_model_admitted_with_two_of_two_signers_gets_a_plan_its_storage_initializer_accepts() -> None:
    policies = [compile_policy(policy(**TWO_OF_TWO))]
    bundles = [bundle("release"), bundle("security")]
    assert decide(request(spec()), PolicySet(tuple(policies)), evidence(*bundles), FakeVerifier()).allowed
    plan = VerificationPlan.for_bundles(bundles, DIGEST, policies, FakeVerifier())
    assert plan.bundles == tuple(sorted(bundles, key=_sha256))
    signed = plan.verify_signature(FakeVerifier())
    assert (signed.digest, sorted(signed.signer.split(", "))) == (DIGEST, ["release", "security"])
    assert VerificationPlan.from_json(plan.to_json()) == plan


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_plan_takes_only_the_bundles_a_threshold_needs_in_content_order() -> None:
    """Her referrers and a second signature of the same authority add nothing."""
    policies = [compile_policy(policy(**TWO_OF_TWO))]
    given = [bundle("mallory"), bundle("security"), bundle("security"), bundle("release", OTHER), bundle("release")]
    plan = VerificationPlan.for_bundles(given, DIGEST, policies, FakeVerifier())
    assert plan.bundles == tuple(sorted([bundle("security"), bundle("release")], key=_sha256))
    assert plan.to_json() == VerificationPlan.for_bundles(given, DIGEST, policies[::-1], FakeVerifier()).to_json()
    assert plan.verify_signature(FakeVerifier()).digest == DIGEST


def test_the_webhook_and_the_operator_derive_the_same_plan_whatever_order_the_registry_listed_the_referrers() -> None:
    """An OCI registry lists a model's referrers in an order of its own, read twice (webhook, operator): each order of
    the same bundles gives the same plan, its bundles sorted by the SHA-256 of their bytes."""
    policies = [compile_policy(policy(**TWO_OF_TWO))]
    given = [bundle("mallory"), bundle("security"), bundle("release"), bundle("security", model="other")]
    plans = set()
    for order in itertools.permutations(given):  # all 24
        plans.add(VerificationPlan.for_bundles(order, DIGEST, policies, FakeVerifier()).to_json())
    assert len(plans) == 1
    plan = VerificationPlan.from_json(plans.pop())
    assert [_sha256(b) for b in plan.bundles] == sorted(_sha256(b) for b in plan.bundles)
    assert len(plan.bundles) == 2
    assert sorted(plan.verify_signature(FakeVerifier()).signer.split(", ")) == ["release", "security"]
    reversed_plan = VerificationPlan.for_bundles(given[::-1], DIGEST, policies, FakeVerifier())
    assert reversed_plan.same_as(VerificationPlan.for_bundles(given, DIGEST, policies, FakeVerifier()))


def test_two_of_two_with_one_signer_missing_holds_the_first_bundle_and_the_pod_refuses() -> None:
    policies = [compile_policy(policy(**TWO_OF_TWO))]
    plan = VerificationPlan.for_bundles([bundle("mallory"), bundle("release")], DIGEST, policies, FakeVerifier())
    assert plan.bundles == (min(bundle("mallory"), bundle("release"), key=_sha256),)
    with pytest.raises(VerificationFailed, match=r"verified for \d of 2 required authorities \(release, security\)"):
        plan.verify_signature(FakeVerifier())


def test_every_bundle_of_a_plan_must_verify_for_the_admitted_digest() -> None:
    policies = [compile_policy(policy())]
    good = VerificationPlan.for_policies(bundle("release"), DIGEST, policies)
    with pytest.raises(VerificationFailed, match="bundle\\(s\\) 1 of 2 verify for none of the authorities"):
        replace(good, bundles=(bundle("release"), bundle("mallory"))).verify_signature(FakeVerifier())
    with pytest.raises(VerificationFailed, match=f"the signature covers {OTHER}, but {DIGEST} was admitted"):
        replace(good, bundles=(bundle("release", OTHER),)).verify_signature(FakeVerifier())


def test_a_one_bundle_plan_keeps_the_json_form_existing_children_carry() -> None:
    plan = VerificationPlan.for_policies(bundle("release"), DIGEST, [compile_policy(policy())])
    raw = json.loads(plan.to_json())
    assert list(raw) == ["bundle", "digest", "policies"]
    assert VerificationPlan.from_json(plan.to_json()) == plan
    two = replace(plan, bundles=(bundle("release"), bundle("security")))
    assert json.loads(two.to_json())["bundles"] == [bundle("release"), bundle("security")]
    assert "bundle" not in json.loads(two.to_json())
    assert not plan.same_as(two)
    assert not two.same_as(replace(two, bundles=two.bundles[::-1]))  # the order is part of the plan


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bundle": "a", "bundles": ["a", "b"]}, "exactly one of 'bundle' and 'bundles'"),
        ({}, "exactly one of 'bundle' and 'bundles'"),
        ({"bundle": None}, "bundle: got NoneType, expected a string"),
        ({"bundles": ["a"]}, f"expected a list of 2 to {MAX_BUNDLES} bundles"),
        ({"bundles": ["a"] * (MAX_BUNDLES + 1)}, f"expected a list of 2 to {MAX_BUNDLES} bundles"),
        ({"bundles": ["a", ""]}, "bundles: expected non-empty strings"),
        ({"bundle": "a", "mlserverGuarded": "yes"}, "mlserver_guarded: got 'yes', expected true or false"),
        ({"bundle": "a", "formats": "onnx"}, "formats: got 'onnx', expected a list of format names"),
        ({"bundle": "a", "formats": ["onnx", 1]}, "formats: .* expected a list of format names"),
        ({"bundle": "a", "runtime": ["triton"]}, "runtime: got .* expected a runtime kind"),
    ],
)
def test_a_malformed_plan_is_refused_naming_the_field(fields: dict[str, object], message: str) -> None:
    raw = json.loads(VerificationPlan.for_policies("one", DIGEST, [compile_policy(policy())]).to_json())
    del raw["bundle"]
    with pytest.raises(InvalidInputError, match=message):
        VerificationPlan.from_json(json.dumps({**raw, **fields}))


def test_the_mlserver_guard_flag_is_part_of_the_plan_and_kept_through_json() -> None:
    plan_json = VerificationPlan.for_policies(bundle("release"), DIGEST, [compile_policy(policy())]).to_json()
    guarded = VerificationPlan.from_json(served_plan(plan_json, runtime="kserve", mlserver_guarded=True))
    assert guarded.mlserver_guarded
    assert not guarded.same_as(VerificationPlan.from_json(plan_json))
    assert VerificationPlan.from_json(guarded.to_json()) == guarded
    assert served_plan("not a plan", runtime="kserve") == "not a plan"  # refused where it is read, as before


def test_the_plan_carries_the_formats_every_admitting_policy_allows_and_keeps_them_through_json() -> None:
    """allow.formats is checked where the bytes load: the plan holds the intersection of every restricting policy's
    formats, sorted whatever order the policies came in, and nothing when no policy restricts them."""
    wide = compile_policy(policy(name="wide", allow={"formats": ["pytorch", "onnx", "python"]}))
    narrow = compile_policy(policy(name="narrow", allow={"formats": ["tensorrt", "onnx", "pytorch"]}))
    open_ = compile_policy(policy(name="open"))
    plan = VerificationPlan.for_policies(bundle("release"), DIGEST, [wide, narrow, open_])
    assert plan.formats == ("onnx", "pytorch")
    assert VerificationPlan.for_policies(bundle("release"), DIGEST, [open_, narrow, wide]).to_json() == plan.to_json()
    assert VerificationPlan.for_policies(bundle("release"), DIGEST, [open_]).formats is None
    assert '"formats"' not in VerificationPlan.for_policies(bundle("release"), DIGEST, [open_]).to_json()
    served = VerificationPlan.from_json(served_plan(plan.to_json(), runtime="triton"))
    assert (served.formats, served.runtime) == (("onnx", "pytorch"), "triton")
    assert VerificationPlan.from_json(served.to_json()) == served
    assert not served.same_as(replace(served, formats=("onnx", "pytorch", "python")))
    assert not served.same_as(replace(served, formats=None))
    assert not served.same_as(replace(served, runtime="kserve"))
    none_allowed = compile_policy(policy(name="none", allow={"formats": ["python"]}))
    assert VerificationPlan.for_policies(bundle("release"), DIGEST, [narrow, none_allowed]).formats == ()
