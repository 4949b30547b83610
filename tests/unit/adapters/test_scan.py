"""``devmlops scan`` (picklescan underneath) on model files the tests craft: every way of running code on load is
found, and files that run nothing are not flagged. docs/evidence.md compares the scanners on the same files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from devmlops.adapters.scan import scan_model
from tests.support.evidence import clean_files, malicious_files


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return malicious_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return clean_files(tmp_path_factory.mktemp("good"))


@pytest.mark.parametrize(
    ("name", "culprit"),
    [
        ("os_system", "system"),
        ("exec", "builtins.exec"),
        ("popen", "subprocess.Popen"),
        ("runpy", "runpy._run_code"),
        ("getattr", "builtins.getattr"),
        ("torch_zip", "system"),
        ("numpy_object", "system"),
        ("renamed", "system"),
        ("keras_lambda", "Lambda layer 'evil'"),
    ],
)
def test_each_malicious_file_is_unsafe_and_the_finding_names_what_it_runs(
    bad: dict[str, Path], name: str, culprit: str
) -> None:
    result = scan_model(bad[name])
    assert not result.ok
    (only,) = result.files
    assert only.status == "unsafe"
    assert any(culprit in finding["description"] for finding in only.findings), only.findings
    assert result.predicate()["summary"]["unsafe"] == 1


def test_a_folder_with_one_malicious_file_among_clean_ones_is_unsafe(tmp_path: Path, good: dict[str, Path]) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for path in good.values():
        (folder / path.name).write_bytes(path.read_bytes())
    assert scan_model(folder).ok
    (folder / "extra.pkl").write_bytes(pickle.dumps(os.system, protocol=4))
    result = scan_model(folder)
    assert not result.ok
    assert [f.path for f in result.files if f.status == "unsafe"] == ["extra.pkl"]


@pytest.mark.parametrize("name", ["sklearn", "plain", "numpy", "torch_zip"])
def test_files_that_run_nothing_on_load_are_not_unsafe(good: dict[str, Path], name: str) -> None:
    result = scan_model(good[name])
    assert result.ok, result.problems()
    assert result.files[0].status in ("clean", "suspicious")


def test_a_scikit_learn_model_is_suspicious_not_unsafe_and_its_classes_are_listed_for_rego(
    good: dict[str, Path],
) -> None:
    (only,) = scan_model(good["sklearn"]).files
    assert only.status == "suspicious"
    assert "sklearn.linear_model._logistic.LogisticRegression" in {f.get("global") for f in only.findings}


def test_json_is_skipped_and_says_so(good: dict[str, Path]) -> None:
    result = scan_model(good["config"])
    assert result.ok
    assert result.predicate()["summary"] == {"filesScanned": 0, "unsafe": 0, "suspicious": 0, "errors": 0, "skipped": 1}


def test_a_joblib_file_the_scanner_cannot_read_to_its_end_is_an_error_not_clean(tmp_path: Path) -> None:
    import joblib
    import numpy as np

    path = tmp_path / "model.joblib"
    joblib.dump({"weights": np.arange(64, dtype=np.float64)}, path)  # raw array bytes inside the pickle stream
    result = scan_model(path)
    assert not result.ok
    assert result.files[0].status == "error"
    assert "could not read the file to its end" in result.problems()[0]


def test_a_payload_in_a_second_pickle_after_a_clean_one_is_found(tmp_path: Path) -> None:
    """pickle.load reads one pickle; a loader that reads on (torch's legacy format does) runs the next one too."""
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0]}, protocol=4) + pickle.dumps(os.system, protocol=4))
    assert scan_model(path).files[0].status == "unsafe"


def test_a_symbolic_link_in_a_model_folder_is_an_error(tmp_path: Path, bad: dict[str, Path]) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.pkl").symlink_to(bad["os_system"])
    result = scan_model(folder)
    assert not result.ok
    assert "symbolic link" in result.problems()[0]


def test_the_predicate_matches_its_schema(bad: dict[str, Path]) -> None:
    from devmlops.adapters.predicates import validate_predicate
    from devmlops.core.attestation import PREDICATE_SCAN

    validate_predicate(PREDICATE_SCAN, scan_model(bad["os_system"].parent).predicate())
