"""`devmlops scan`, `evaluate` and `attest`: the evidence a CI job produces, with `verify`'s exit codes (0 ok,
1 found unsafe, 2 usage or input error), on a real model trained on scikit-learn's bundled diabetes data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.predicates import validate_predicate
from devmlops.core.attestation import PREDICATE_EVALUATION
from devmlops.core.drift import parse_baseline
from devmlops.core.policy import Authority
from devmlops.harness.evidencemodels import TARGET, train_demo_model, write_demo_data
from tests.support.evidence import malicious_files
from tests.support.models import make_key
from tests.unit.test_cli import devmlops

DIGEST = "sha256:" + "12" * 32


def test_scan_exits_0_for_a_clean_model_and_1_naming_the_unsafe_file(tmp_path: Path) -> None:
    model = train_demo_model(tmp_path / "model" / "model.pkl").parent
    clean = devmlops("scan", model, "--output", tmp_path / "scan.json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads((tmp_path / "scan.json").read_text())["summary"]["unsafe"] == 0
    (model / "payload.pkl").write_bytes(malicious_files(tmp_path / "bad")["os_system"].read_bytes())
    unsafe = devmlops("scan", model, "--json")
    assert unsafe.returncode == 1
    assert json.loads(unsafe.stdout)["summary"]["unsafe"] == 1
    assert "payload.pkl: unsafe: imports posix.system" in devmlops("scan", model).stderr


def test_scan_of_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    assert devmlops("scan", tmp_path / "nothing").returncode == 2


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("evaluate")
    model = train_demo_model(folder / "model.pkl")
    data = write_demo_data(folder / "held-out.csv")
    result = devmlops(
        "evaluate",
        model,
        "--data",
        data,
        "--target",
        TARGET,
        "--sensitive-feature",
        "sex",
        "--output-dir",
        folder / "out",
    )
    assert result.returncode == 0, result.stderr
    assert "sex: demographic parity difference" in result.stdout
    return folder / "out"


def test_evaluate_writes_the_three_predicates_with_real_figures(evaluated: Path) -> None:
    evaluation = json.loads((evaluated / "evaluation.json").read_text())
    fairness = json.loads((evaluated / "fairness.json").read_text())
    robustness = json.loads((evaluated / "robustness.json").read_text())
    assert 0.6 < evaluation["metrics"]["accuracy"] < 1.0
    assert evaluation["dataset"]["rows"] == 221
    (sex,) = fairness["sensitiveFeatures"]
    assert sex["name"] == "sex"
    assert 0 <= sex["demographicParityDifference"] < 0.2
    assert sum(group["count"] for group in sex["groups"].values()) == 221
    assert robustness["attack"]["name"] == "FastGradientMethod"
    assert robustness["perturbedAccuracy"] <= robustness["cleanAccuracy"]


def test_evaluate_writes_a_drift_baseline_of_every_feature_that_the_schema_and_the_parser_accept(
    evaluated: Path,
) -> None:
    evaluation = json.loads((evaluated / "evaluation.json").read_text())
    validate_predicate(PREDICATE_EVALUATION, evaluation)  # the schema the verifier checks signed predicates with
    baseline = parse_baseline(evaluation["baseline"])
    assert baseline.rows == 221
    assert [f.name for f in baseline.features][:2] == ["age", "sex"]  # every feature column, in the model's order
    assert [f.index for f in baseline.features] == list(range(10))
    age = baseline.features[0]
    assert len(age.edges) == 9
    assert abs(sum(age.proportions) - 1) < 1e-9
    assert all(0.05 < p < 0.15 for p in age.proportions)  # quantile bins: about a tenth of the rows each
    sex = baseline.features[1]
    assert len(sex.edges) == 1  # two distinct values: repeated cut points merged, two bins


def test_a_model_trained_on_skewed_labels_shows_a_large_parity_difference(tmp_path: Path) -> None:
    model = train_demo_model(tmp_path / "model.pkl", fair=False)
    data = write_demo_data(tmp_path / "held-out.csv")
    result = devmlops(
        "evaluate",
        model,
        "--data",
        data,
        "--target",
        TARGET,
        "--sensitive-feature",
        "sex",
        "--no-robustness",
        "--output-dir",
        tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr
    (sex,) = json.loads((tmp_path / "out" / "fairness.json").read_text())["sensitiveFeatures"]
    assert sex["demographicParityDifference"] > 0.3
    assert not (tmp_path / "out" / "robustness.json").exists()


def test_evaluate_refuses_to_load_a_malicious_model_and_runs_nothing(tmp_path: Path) -> None:
    bad = malicious_files(tmp_path / "bad")["os_system"]
    model = tmp_path / "model.pkl"
    model.write_bytes(bad.read_bytes())
    data = write_demo_data(tmp_path / "held-out.csv")
    result = devmlops("evaluate", model, "--data", data, "--target", TARGET, "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert "not loaded, the scan found unsafe content" in result.stderr
    assert not Path("/tmp/devmlops-pwned").exists()


def test_evaluate_names_a_missing_column(tmp_path: Path) -> None:
    model = train_demo_model(tmp_path / "model.pkl")
    data = write_demo_data(tmp_path / "held-out.csv")
    result = devmlops("evaluate", model, "--data", data, "--target", "outcome", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert "no column(s) ['outcome']" in result.stderr


def test_attest_signs_a_predicate_that_verifies_for_the_key(evaluated: Path, tmp_path: Path) -> None:
    key = make_key(tmp_path)
    out = tmp_path / "fairness.att.json"
    result = devmlops(
        "attest",
        "--predicate-type",
        "fairness",
        "--predicate",
        evaluated / "fairness.json",
        "--model-digest",
        DIGEST,
        "--model-name",
        "diabetes",
        "--private-key",
        key.private,
        "--output",
        out,
    )
    assert result.returncode == 0, result.stderr
    verified = OmsVerifier().verify_attestation(
        out.read_text(), Authority(name="k", kind="key", public_key=key.public_pem)
    )
    assert verified.statement.predicate_type == "https://devmlops.io/attestation/fairness/v1"
    assert verified.statement.subjects == (("diabetes", DIGEST),)


def test_attest_refuses_a_predicate_of_the_wrong_type_and_a_bad_digest(evaluated: Path, tmp_path: Path) -> None:
    key = make_key(tmp_path)
    wrong = devmlops(
        "attest",
        "--predicate-type",
        "scan",
        "--predicate",
        evaluated / "fairness.json",
        "--model-digest",
        DIGEST,
        "--private-key",
        key.private,
        "--output",
        tmp_path / "x.json",
    )
    assert wrong.returncode == 2
    assert "does not match its schema" in wrong.stderr
    digest = devmlops(
        "attest",
        "--predicate-type",
        "fairness",
        "--predicate",
        evaluated / "fairness.json",
        "--model-digest",
        "sha256:1234",
        "--private-key",
        key.private,
        "--output",
        tmp_path / "x.json",
    )
    assert digest.returncode == 2
    assert "--model-digest" in digest.stderr
    both = devmlops(
        "attest",
        "--predicate-type",
        "fairness",
        "--predicate",
        evaluated / "fairness.json",
        "--model-digest",
        DIGEST,
        "--output",
        tmp_path / "x.json",
    )
    assert both.returncode == 2
    assert not (tmp_path / "x.json").exists()
