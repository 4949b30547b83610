"""The signed drift baseline (core/baseline.py) and the guard gate's drift demand, with real signed attestations
verified by the real OmsVerifier (tests/support/evidence.py), through decide() as admission runs it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from devmlops.adapters.predicates import read_statement
from devmlops.core.attestation import IN_TOTO_STATEMENT, PREDICATE_EVALUATION
from devmlops.core.baseline import evaluation_authorities, monitors_drift, signed_baseline
from devmlops.core.drift import baseline_from_columns
from devmlops.core.evidence import Document
from devmlops.core.policy import PolicySet
from devmlops.core.ports import VerificationFailed
from devmlops.errors import InvalidInputError
from tests.support.evidence import attestation, now_rfc3339, predicate
from tests.support.models import KeyFiles, make_key
from tests.unit.core.fakes import DIGEST
from tests.unit.core.test_evidence_gate import OTHER, Verifier, model, policy, run

OLD = baseline_from_columns([[float(i) for i in range(20)]], ["x"])
NEW = baseline_from_columns([[float(i) * 2 for i in range(20)]], ["x"])
IMAGE = "nvcr.io/nvidia/tritonserver@sha256:" + "a1" * 32


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyFiles]:
    folder = tmp_path_factory.mktemp("keys")
    return {"release": make_key(folder, "release"), "mallory": make_key(folder, "mallory")}


def evaluation(keys: dict[str, KeyFiles], baseline: Any, *, key: str = "release", digest: str = DIGEST,
               age_days: int = 0) -> str:  # fmt: skip
    body = predicate("evaluation", timestamp=now_rfc3339(-dt.timedelta(days=age_days)))
    if baseline is not None:
        body["baseline"] = baseline.to_dict() if hasattr(baseline, "to_dict") else baseline
    return attestation("evaluation", body, digest, key=keys[key])


def pick(keys: dict[str, KeyFiles], *bundles: str) -> str:
    authorities = evaluation_authorities(policy(keys).policies)
    documents = [Document(f"spec.attestations[{i}]", text=b) for i, b in enumerate(bundles)]
    return signed_baseline(documents, DIGEST, authorities, Verifier())


def test_the_newest_verified_evaluation_of_the_digest_gives_the_baseline(keys: dict[str, KeyFiles]) -> None:
    assert pick(keys, evaluation(keys, OLD, age_days=3), evaluation(keys, NEW, age_days=1)) == NEW.to_json()
    assert pick(keys, evaluation(keys, NEW, age_days=1), evaluation(keys, OLD, age_days=3)) == NEW.to_json()


def test_a_baseline_signed_by_another_key_or_about_another_model_is_not_taken(keys: dict[str, KeyFiles]) -> None:
    assert pick(keys, evaluation(keys, NEW, key="mallory")) == ""
    assert pick(keys, evaluation(keys, NEW, digest=OTHER)) == ""
    assert pick(keys, evaluation(keys, None)) == ""  # an evaluation without a baseline
    assert pick(keys, evaluation(keys, OLD, age_days=2), evaluation(keys, NEW, key="mallory")) == OLD.to_json()


def test_a_baseline_that_does_not_parse_is_neither_signed_nor_verified_naming_the_field(
    keys: dict[str, KeyFiles],
) -> None:
    broken = OLD.to_dict()
    broken["features"][0]["edges"] = list(reversed(broken["features"][0]["edges"]))
    where = r"predicate\.baseline\.features\[0\]\.edges: expected strictly ascending"
    with pytest.raises(InvalidInputError, match=where):  # devmlops attest refuses to sign it
        evaluation(keys, broken)
    statement = {
        "_type": IN_TOTO_STATEMENT,
        "subject": [{"name": "model", "digest": {"sha256": DIGEST.removeprefix("sha256:")}}],
        "predicateType": PREDICATE_EVALUATION,
        "predicate": {**predicate("evaluation"), "baseline": broken},
    }
    with pytest.raises(VerificationFailed, match=where):  # and a verifier reading a signed one refuses it
        read_statement(json.dumps(statement).encode())


def triton(attestations: list[str], drift: dict[str, Any] | None) -> dict[str, Any]:
    obj = model(attestations)
    obj["spec"]["runtime"] = {"kind": "triton", "image": IMAGE}
    obj["spec"]["guard"] = {"protocol": "v2", **({"drift": drift} if drift is not None else {})}
    return obj


def guard_reasons(policies: PolicySet, obj: dict[str, Any]) -> list[str]:
    return [r.reason for r in run(policies, obj).results if r.gate == "guard"]


def test_a_policy_requiring_drift_monitoring_needs_spec_guard_drift_and_a_signed_baseline(
    keys: dict[str, KeyFiles],
) -> None:
    policies = policy(keys, guard={"drift": {"required": True, "maxThreshold": 0.3}})
    signed = evaluation(keys, NEW)
    assert guard_reasons(policies, triton([signed], {"threshold": 0.2})) == [
        "the guard is at least as strict as the policy demands"
    ]
    (missing,) = guard_reasons(policies, triton([signed], None))
    assert missing.startswith("spec.guard.drift is missing; drift monitoring is required (ClusterModelPolicy prod)")
    (unsigned,) = guard_reasons(policies, triton([evaluation(keys, None)], {"threshold": 0.2}))
    assert "no verified evaluation attestation of spec.model.digest carries a baseline" in unsigned
    (forged,) = guard_reasons(policies, triton([evaluation(keys, NEW, key="mallory")], {"threshold": 0.2}))
    assert "no verified evaluation attestation" in forged
    decision = run(policies, triton([evaluation(keys, NEW, key="mallory")], {"threshold": 0.2}))
    assert not decision.allowed


def test_only_a_model_deployment_declaring_drift_is_looked_at() -> None:
    assert monitors_drift({"spec": {"guard": {"drift": {}}}})
    assert not monitors_drift({"spec": {"guard": {"protocol": "v2"}}})
    assert not monitors_drift({"spec": {}})
    assert json.loads(NEW.to_json())["rows"] == 20
