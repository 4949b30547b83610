"""Every sample input of every Rego policy gives the verdict its file name promises, through the real OPA."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SAMPLES = sorted((ROOT / "policies").glob("*/samples/*.json"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_each_policy_sample_is_decided_as_its_name_says(tools_dir: Path, sample: Path) -> None:
    folder = sample.parent.parent
    package = f"data.devmlops.{folder.name}.deny"
    result = subprocess.run(
        [
            str(tools_dir / "opa"),
            "eval",
            "--format",
            "json",
            "--input",
            str(sample),
            "--data",
            str(folder / "policy.rego"),
            package,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    denials = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
    if sample.stem.startswith("allowed-"):
        assert denials == [], denials
    else:
        assert sample.stem.startswith("denied-")
        assert denials, f"{sample.name} was expected to be denied"


def test_every_policy_folder_has_a_policy_tests_and_both_kinds_of_samples() -> None:
    for folder in sorted(p for p in (ROOT / "policies").iterdir() if p.is_dir()):
        assert (folder / "policy.rego").is_file(), folder
        assert (folder / "policy_test.rego").is_file(), folder
        names = [p.stem for p in (folder / "samples").glob("*.json")]
        assert any(n.startswith("allowed-") for n in names), folder
        assert any(n.startswith("denied-") for n in names), folder
