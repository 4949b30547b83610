"""The evidence gate through decide(): real signed attestations (tests/support/evidence.py), verified by the real
OmsVerifier behind the result cache; Rego conditions through the real OPA binary (`opa eval`). The model's own
signature uses the core tests' fake verifier (its gate is tested elsewhere)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.verifycache import CachingVerifier
from devmlops.core.attestation import VerifiedAttestation
from devmlops.core.decision import decide
from devmlops.core.evidence import Document, Evidence
from devmlops.core.model import Decision
from devmlops.core.policy import Authority, PolicySet, compile_policy
from devmlops.core.ports import PolicyEngineUnavailable, RegoVerdict, SignedModel, VerificationUnavailable
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.errors import InvalidInputError
from tests.conftest import ROOT
from tests.support.evidence import attestation, now_rfc3339, predicate
from tests.support.models import KeyFiles, make_key, make_model, sign_with_key
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle

OTHER = "sha256:" + "ef" * 32


class Verifier(FakeVerifier):
    """The fake model signature; attestations through the real verifier and its cache."""

    def __init__(self) -> None:
        super().__init__()
        self.real = CachingVerifier(OmsVerifier())

    def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        return self.real.verify_attestation(bundle, authority)


class OpaEval:
    """The PolicyEngine port over the real `opa eval` on policies/ (the webhook talks to `opa run --server`)."""

    def __init__(self, opa: Path) -> None:
        self.opa = opa

    def evaluate(self, package: str, document: Mapping[str, Any]) -> RegoVerdict:
        result = subprocess.run(
            [
                str(self.opa),
                "eval",
                "--format",
                "json",
                "--stdin-input",
                "--data",
                str(ROOT / "policies"),
                "--ignore",
                "samples",
                "--ignore",
                "*_test.rego",
                f"data.{package}",
            ],
            input=json.dumps(document),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        value = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
        return RegoVerdict(deny=tuple(sorted(value.get("deny", []))), warn=tuple(sorted(value.get("warn", []))))


@pytest.fixture(scope="module")
def opa() -> OpaEval:
    tools = os.environ.get("DEVMLOPS_TOOLS_DIR", "")
    candidates = [Path(tools) / "opa"] if tools else []
    candidates += sorted(Path.home().glob(".cache/devmlops/tools/*/opa"))
    found = next((c for c in candidates if c.is_file()), None) or (Path(w) if (w := shutil.which("opa")) else None)
    if found is None:
        pytest.skip("no opa binary: `make tools` builds it (DEVMLOPS_TOOLS_DIR names its folder)")
    return OpaEval(found)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyFiles]:
    folder = tmp_path_factory.mktemp("keys")
    return {"release": make_key(folder, "release"), "mallory": make_key(folder, "mallory")}


def policy(keys: dict[str, KeyFiles], **spec: Any) -> PolicySet:
    authorities = [{"name": "release", "key": {"publicKey": keys["release"].public_pem}}]
    return PolicySet((compile_policy({"metadata": {"name": "prod"}, "spec": {"authorities": authorities, **spec}}),))


def model(attestations: list[str], *, tier: str = "minimal") -> dict[str, Any]:
    return {
        "metadata": {"name": "fraud", "namespace": "ml", "labels": {"devmlops.io/eu-ai-act-risk": tier}},
        "spec": {
            "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
            "runtime": {"kind": "kserve"},
            "signature": {"inline": bundle("release")},
            "attestations": [{"inline": a} for a in attestations],
        },
    }


def run(
    policies: PolicySet, obj: dict[str, Any], *, engine: Any = None, verifier: Any = None, now: str | None = None
) -> Decision:
    request = AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation="CREATE",
        namespace="ml",
        name="fraud",
        username="alice",
        groups=(),
        object=obj,
        old_object=None,
    )
    documents = tuple(
        Document(f"spec.attestations[{i}].inline", text=a["inline"]) for i, a in enumerate(obj["spec"]["attestations"])
    )
    evidence = Evidence(
        signatures=(Document("spec.signature.inline", text=bundle("release")),),
        attestations=documents,
        now=now_rfc3339() if now is None else now,
    )
    return decide(request, policies, evidence, verifier or Verifier(), engine)


def evidence_reasons(decision: Decision) -> list[str]:
    return [r.reason for r in decision.results if r.gate == "evidence"]


FAIRNESS = [{"name": "fairness", "predicateType": "fairness", "maxAge": "30d"}]


def test_a_valid_attestation_satisfies_the_requirement(keys: dict[str, KeyFiles]) -> None:
    signed = attestation("fairness", predicate("fairness"), DIGEST, key=keys["release"])
    decision = run(policy(keys, evidence=FAIRNESS), model([signed]))
    assert decision.allowed, decision.message
    (reason,) = evidence_reasons(decision)
    assert reason.startswith("evidence 'fairness': spec.attestations[0], signed by key sha256:")


def test_no_attestation_is_denied_naming_the_requirement(keys: dict[str, KeyFiles]) -> None:
    decision = run(policy(keys, evidence=FAIRNESS), model([]))
    assert not decision.allowed
    assert "evidence 'fairness' (https://devmlops.io/attestation/fairness/v1, signed by release, at most 30d old)" in (
        decision.message
    )
    assert "no attestation satisfies it: spec.attestations lists none" in decision.message


def test_an_attestation_about_another_model_is_denied_as_the_wrong_subject(keys: dict[str, KeyFiles]) -> None:
    signed = attestation("fairness", predicate("fairness"), OTHER, key=keys["release"])
    decision = run(policy(keys, evidence=FAIRNESS), model([signed]))
    assert not decision.allowed
    assert "spec.attestations[0]: wrong subject: it is about sha256:efefefefefef..., expected spec.model.digest " in (
        decision.message
    )


def test_an_attestation_older_than_max_age_is_denied_as_expired(keys: dict[str, KeyFiles]) -> None:
    old = now_rfc3339(-dt.timedelta(days=45))
    signed = attestation("fairness", predicate("fairness", timestamp=old), DIGEST, key=keys["release"])
    decision = run(policy(keys, evidence=FAIRNESS), model([signed]))
    assert not decision.allowed
    assert f"spec.attestations[0]: expired: made {old}, 45d0h old, expected at most 30d" in decision.message


def test_a_timestamp_in_the_future_is_denied(keys: dict[str, KeyFiles]) -> None:
    ahead = now_rfc3339(dt.timedelta(days=2))
    signed = attestation("fairness", predicate("fairness", timestamp=ahead), DIGEST, key=keys["release"])
    decision = run(policy(keys, evidence=FAIRNESS), model([signed]))
    assert not decision.allowed
    assert f"timestamp {ahead} is in the future" in decision.message


def test_an_attestation_signed_by_another_key_is_denied_naming_the_authority(keys: dict[str, KeyFiles]) -> None:
    signed = attestation("fairness", predicate("fairness"), DIGEST, key=keys["mallory"])
    decision = run(policy(keys, evidence=FAIRNESS), model([signed]))
    assert not decision.allowed
    assert "spec.attestations[0]: not verified (release: signature rejected: Key mismatch" in decision.message


def test_the_models_own_signature_replayed_as_evidence_is_not_evidence(
    keys: dict[str, KeyFiles], tmp_path: Path
) -> None:
    """Signed by the trusted key, about the right digest: still a statement of model_signing's predicate type."""
    signature = sign_with_key(make_model(tmp_path / "m"), keys["release"], tmp_path / "model.sig")
    decision = run(policy(keys, evidence=FAIRNESS), model([signature]))
    assert not decision.allowed
    assert "spec.attestations[0]: predicateType https://model_signing/signature/v1.0" in decision.message


def test_an_attestation_of_another_type_does_not_satisfy_a_requirement(keys: dict[str, KeyFiles]) -> None:
    scan = attestation("scan", predicate("scan"), DIGEST, key=keys["release"])
    decision = run(policy(keys, evidence=FAIRNESS), model([scan]))
    assert not decision.allowed
    assert "spec.attestations[0]: predicateType https://devmlops.io/attestation/scan/v1" in decision.message


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("not json", "signature bundle is not valid JSON"),
        ('{"verificationMaterial": {"publicKey": {"hint": "x"}}}', "dsseEnvelope: got NoneType, expected an object"),
        ("{}", "signature bundle has no verificationMaterial"),
    ],
)
def test_a_malformed_bundle_is_denied_naming_what_is_wrong(
    keys: dict[str, KeyFiles], text: str, complaint: str
) -> None:
    decision = run(policy(keys, evidence=FAIRNESS), model([text]))
    assert not decision.allowed
    assert complaint in decision.message


def test_one_good_attestation_among_bad_ones_is_enough_and_the_others_are_not_reported(
    keys: dict[str, KeyFiles],
) -> None:
    good = attestation("fairness", predicate("fairness"), DIGEST, key=keys["release"])
    bad = attestation("fairness", predicate("fairness"), DIGEST, key=keys["mallory"])
    decision = run(policy(keys, evidence=FAIRNESS), model([bad, good]))
    assert decision.allowed, decision.message
    assert evidence_reasons(decision)[0].startswith("evidence 'fairness': spec.attestations[1]")


def test_an_unavailable_verification_is_an_error_that_denies(keys: dict[str, KeyFiles]) -> None:
    class Slow(Verifier):
        def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
            raise VerificationUnavailable("attestation verification timed out after 3s")

    signed = attestation("fairness", predicate("fairness"), DIGEST, key=keys["release"])
    decision = run(policy(keys, evidence=FAIRNESS), model([signed]), verifier=Slow())
    assert not decision.allowed
    assert "timed out after 3s" in decision.message


def test_requirements_may_name_their_own_authorities(keys: dict[str, KeyFiles]) -> None:
    evaluators = [{"name": "evaluators", "key": {"publicKey": keys["mallory"].public_pem}}]
    requirement = [{"name": "scan", "predicateType": "scan", "authorities": evaluators}]
    by_release = attestation("scan", predicate("scan"), DIGEST, key=keys["release"])
    by_evaluators = attestation("scan", predicate("scan"), DIGEST, key=keys["mallory"])
    assert not run(policy(keys, evidence=requirement), model([by_release])).allowed
    assert run(policy(keys, evidence=requirement), model([by_evaluators])).allowed


def test_the_high_risk_tier_requires_evaluation_fairness_and_robustness_by_default(keys: dict[str, KeyFiles]) -> None:
    compliance = {"requireRiskLabel": True}
    kinds = ("evaluation", "fairness", "robustness")
    signed = [attestation(kind, predicate(kind), DIGEST, key=keys["release"]) for kind in kinds]
    assert run(policy(keys, compliance=compliance), model(signed, tier="high")).allowed
    missing = run(policy(keys, compliance=compliance), model(signed[:2], tier="high"))
    assert not missing.allowed
    assert (
        "evidence 'eu-ai-act-high-robustness' (https://devmlops.io/attestation/robustness/v1, signed by release)"
        in (missing.message)
    )
    assert "demanded by risk tier high" in missing.message
    assert run(policy(keys, compliance=compliance), model([], tier="limited")).allowed
    none = {"tiers": {"high": {"requiredEvidence": []}}}
    assert run(policy(keys, compliance=none), model([], tier="high")).allowed
    scan_only = {"tiers": {"limited": {"requiredEvidence": ["scan"]}}}
    denied = run(policy(keys, compliance=scan_only), model(signed, tier="limited"))
    assert "eu-ai-act-limited-scan" in denied.message


def test_a_tier_requirement_is_met_by_the_policys_own_requirement_of_that_type(keys: dict[str, KeyFiles]) -> None:
    evaluators = [{"name": "evaluators", "key": {"publicKey": keys["mallory"].public_pem}}]
    requirement = [{"name": "fair", "predicateType": "fairness", "authorities": evaluators}]
    signed = [attestation(k, predicate(k), DIGEST, key=keys["release"]) for k in ("evaluation", "robustness")]
    signed.append(attestation("fairness", predicate("fairness"), DIGEST, key=keys["mallory"]))
    decision = run(policy(keys, compliance={}, evidence=requirement), model(signed, tier="high"))
    assert decision.allowed, decision.message
    assert len(evidence_reasons(decision)) == 3


def test_conditions_in_rego_deny_with_the_value_found_and_the_threshold(
    keys: dict[str, KeyFiles], opa: OpaEval
) -> None:
    parameters = {"sensitiveFeatures": ["sex"], "maxDemographicParityDifference": 0.1}
    requirement = [
        {
            "name": "fairness",
            "predicateType": "fairness",
            "conditions": {"package": "devmlops.evidence", "parameters": parameters},
        }
    ]
    unfair = predicate("fairness")
    unfair["sensitiveFeatures"][0]["demographicParityDifference"] = 0.693
    decision = run(
        policy(keys, evidence=requirement),
        model([attestation("fairness", unfair, DIGEST, key=keys["release"])]),
        engine=opa,
    )
    assert not decision.allowed
    assert "evidence 'fairness': spec.attestations[0], signed by key sha256:" in decision.message
    assert "demographic parity difference for 'sex': found 0.693, expected at most 0.1" in decision.message
    fair = attestation("fairness", predicate("fairness"), DIGEST, key=keys["release"])
    passed = run(policy(keys, evidence=requirement), model([fair]), engine=opa)
    assert passed.allowed, passed.message
    assert "conditions in devmlops.evidence hold" in evidence_reasons(passed)[0]


def test_the_newest_attestation_is_the_one_judged(keys: dict[str, KeyFiles], opa: OpaEval) -> None:
    """An older passing attestation cannot hide a newer failing one."""
    requirement = [
        {
            "name": "fairness",
            "predicateType": "fairness",
            "conditions": {"package": "devmlops.evidence", "parameters": {"maxDemographicParityDifference": 0.1}},
        }
    ]
    older = attestation(
        "fairness", predicate("fairness", timestamp=now_rfc3339(-dt.timedelta(days=2))), DIGEST, key=keys["release"]
    )
    unfair = predicate("fairness", timestamp=now_rfc3339(-dt.timedelta(hours=1)))
    unfair["sensitiveFeatures"][0]["demographicParityDifference"] = 0.3
    newer = attestation("fairness", unfair, DIGEST, key=keys["release"])
    decision = run(policy(keys, evidence=requirement), model([older, newer]), engine=opa)
    assert not decision.allowed
    assert "spec.attestations[1]" in decision.message


def test_conditions_without_opa_or_with_opa_down_fail_closed(keys: dict[str, KeyFiles]) -> None:
    requirement = [{"name": "fairness", "predicateType": "fairness", "conditions": {"package": "devmlops.evidence"}}]
    signed = attestation("fairness", predicate("fairness"), DIGEST, key=keys["release"])
    assert "no OPA is configured (fail closed)" in run(policy(keys, evidence=requirement), model([signed])).message

    class Down:
        def evaluate(self, package: str, document: Mapping[str, Any]) -> RegoVerdict:
            raise PolicyEngineUnavailable("OPA did not answer within 2s")

    decision = run(policy(keys, evidence=requirement), model([signed]), engine=Down())
    assert not decision.allowed
    assert "OPA did not answer within 2s" in decision.message


def test_no_clock_means_no_judgement_of_age(keys: dict[str, KeyFiles]) -> None:
    signed = attestation("fairness", predicate("fairness"), DIGEST, key=keys["release"])
    assert "no clock to judge evidence age" in run(policy(keys, evidence=FAIRNESS), model([signed]), now="").message


@pytest.mark.parametrize(
    ("evidence", "complaint"),
    [
        (
            [{"name": "a", "predicateType": "fairness"}, {"name": "a", "predicateType": "scan"}],
            "requirement names must be unique",
        ),
        ([{"name": "a", "predicateType": "not a uri"}], "spec.evidence[0].predicateType: got 'not a uri'"),
        ([{"name": "a", "predicateType": "scan", "maxAge": "0d"}], "spec.evidence[0].maxAge: got '0d'"),
        ([{"name": "a", "predicateType": "scan", "maxAge": "30 days"}], "spec.evidence[0].maxAge: found '30 days'"),
        ([{"name": "a", "predicateType": "scan", "authorities": []}], "spec.evidence[0].authorities: empty"),
        ([{"name": "A_b", "predicateType": "scan"}], "spec.evidence[0].name: found 'A_b'"),
        ([{"name": "a", "predicateType": "scan", "threshold": 0.1}], "spec.evidence[0].threshold: unknown field"),
    ],
)
def test_a_broken_requirement_does_not_compile_and_names_the_field(
    keys: dict[str, KeyFiles], evidence: list[dict[str, Any]], complaint: str
) -> None:
    with pytest.raises(InvalidInputError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        policy(keys, evidence=evidence)


def test_a_verified_result_is_cached_so_a_second_admission_does_not_verify_again(keys: dict[str, KeyFiles]) -> None:
    events: list[str] = []
    verifier = Verifier()
    verifier.real = CachingVerifier(OmsVerifier(), on_event=events.append)
    signed = attestation("fairness", predicate("fairness"), DIGEST, key=keys["release"])
    for _ in range(3):
        assert run(policy(keys, evidence=FAIRNESS), model([signed]), verifier=verifier).allowed
    assert events == ["miss", "hit", "hit"]
    assert isinstance(verifier.verify_model(bundle("release"), Authority(name="release", kind="key")), SignedModel)


def test_a_team_policy_may_add_evidence_but_not_drop_what_the_tier_demands(keys: dict[str, KeyFiles]) -> None:
    from devmlops.core.narrowing import widenings

    (cluster,) = policy(keys, compliance={}).policies
    dropped = widenings({"compliance": {"tiers": {"high": {"requiredEvidence": ["evaluation"]}}}}, [cluster])
    assert dropped == [
        "spec.compliance.tiers.high.requiredEvidence: leaves out https://devmlops.io/attestation/fairness/v1, "
        "https://devmlops.io/attestation/robustness/v1, which ClusterModelPolicy prod requires for tier high "
        "(a team may only add evidence)"
    ]
    more = ["evaluation", "fairness", "robustness", "scan"]
    assert widenings({"compliance": {"tiers": {"high": {"requiredEvidence": more}}}}, [cluster]) == []
    assert widenings({"evidence": [{"name": "scan", "predicateType": "scan"}]}, [cluster]) == []


def test_a_requirement_can_apply_to_some_risk_tiers_only(keys: dict[str, KeyFiles]) -> None:
    requirement = [{"name": "fairness", "predicateType": "fairness", "tiers": ["high"]}]
    compliance = {"tiers": {"high": {"requiredEvidence": ["fairness"]}}}
    assert run(policy(keys, compliance=compliance, evidence=requirement), model([], tier="limited")).allowed
    denied = run(policy(keys, compliance=compliance, evidence=requirement), model([], tier="high"))
    assert "evidence 'fairness' (https://devmlops.io/attestation/fairness/v1" in denied.message
    with pytest.raises(InvalidInputError, match=r"spec.evidence\[0\].tiers: empty"):
        policy(keys, evidence=[{"name": "f", "predicateType": "fairness", "tiers": []}])


def test_the_policys_short_names_are_the_predicate_types_the_attestations_carry() -> None:
    from devmlops.core.attestation import DEVMLOPS_PREDICATES
    from devmlops.core.policy import predicate_uri

    assert {short: predicate_uri(short) for short in DEVMLOPS_PREDICATES} == DEVMLOPS_PREDICATES
    assert predicate_uri("https://slsa.dev/provenance/v1") == "https://slsa.dev/provenance/v1"
