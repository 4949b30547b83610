"""The pure parts of `make e2e` (devmlops.harness.e2e): the report, the tampering, the storage container it installs."""

from __future__ import annotations

from pathlib import Path

import pytest

from devmlops.harness.e2e import E2E, E2EFailure, Report, one_byte_changed
from devmlops.harness.pyimages import DEVMLOPS_KSERVE_IMAGE
from tests.conftest import ROOT


def test_a_failed_check_is_recorded_and_stops_the_run() -> None:
    report = Report()
    report.check("helm test", "Succeeded", "Succeeded", True)
    with pytest.raises(E2EFailure, match="expected Succeeded; Failed"):
        report.check("helm test again", "Succeeded", "Failed", False)
    assert report.failed
    table = report.format()
    assert table.splitlines()[0].split() == ["STEP", "EXPECTED", "VERDICT", "OUTCOME"]
    assert "FAILED" in table.splitlines()[2]


def test_one_byte_changed_changes_exactly_one_byte() -> None:
    data = bytes(range(256)) * 4
    changed = one_byte_changed(data)
    assert len(changed) == len(data)
    assert sum(a != b for a, b in zip(data, changed, strict=True)) == 1


def test_the_storage_container_is_devmlopss_with_the_local_image_and_the_mounted_ca_bundle(tmp_path: Path) -> None:
    e2e = E2E(tools_dir=tmp_path, project_dir=ROOT, workdir=tmp_path, report=Report())
    doc = e2e.storage_container()
    container = doc["spec"]["container"]
    assert (doc["metadata"]["name"], container["image"]) == ("devmlops-verifying", DEVMLOPS_KSERVE_IMAGE)
    assert container["command"] == ["devmlops", "storage-initializer"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "DEVMLOPS_VERIFICATION" in env  # the plan, from the Pod's annotation
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == "/etc/ssl/custom-certs/cabundle.crt"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
