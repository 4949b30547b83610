"""The pure parts of `make e2e` and `make kind-e2e` (devmlops.harness.e2e): the report, the tampering, the storage
container it installs, the same steps on either cluster, and `--cluster kind` refused naming what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client as k8s

from devmlops.harness.e2e import E2E, E2EFailure, Report, one_byte_changed, plan, story
from devmlops.harness.e2ecluster import Cluster, Images, LocalNode
from devmlops.harness.kindcluster import KIND_TOOLS, Kind, missing_tools
from devmlops.harness.pyimages import DEVMLOPS_KSERVE_IMAGE
from tests.conftest import ROOT


def _e2e(cluster: Cluster, tmp_path: Path) -> E2E:
    return E2E(cluster=cluster, tools_dir=tmp_path, project_dir=ROOT, workdir=tmp_path, report=Report())


def _clusters(tmp_path: Path) -> dict[str, Cluster]:
    """Both providers, not started (nothing here starts a node or a kind cluster)."""
    return {
        "local": LocalNode(tools_dir=tmp_path, workdir=tmp_path),
        "kind": Kind(tools_dir=tmp_path, workdir=tmp_path, project_dir=ROOT, name="devmlops-e2e"),
    }


def test_a_failed_check_is_recorded_and_stops_the_run() -> None:
    report = Report()
    report.check("helm test", "Succeeded", "Succeeded", True)
    assert report.first_failure() == ""
    with pytest.raises(E2EFailure, match="expected Succeeded; Failed"):
        report.check("helm test again", "Succeeded", "Failed", False)
    assert report.failed
    table = report.format()
    assert table.splitlines()[0].split() == ["STEP", "EXPECTED", "VERDICT", "OUTCOME"]
    assert "FAILED" in table.splitlines()[2]
    assert report.first_failure() == ": helm test again: Failed"  # the run's last line names it


def test_one_byte_changed_changes_exactly_one_byte() -> None:
    data = bytes(range(256)) * 4
    changed = one_byte_changed(data)
    assert len(changed) == len(data)
    assert sum(a != b for a, b in zip(data, changed, strict=True)) == 1


def test_the_storage_container_is_devmlopss_with_the_local_image_and_the_mounted_ca_bundle(tmp_path: Path) -> None:
    doc = _e2e(LocalNode(tools_dir=tmp_path, workdir=tmp_path), tmp_path).storage_container()
    container = doc["spec"]["container"]
    assert (doc["metadata"]["name"], container["image"]) == ("devmlops-verifying", DEVMLOPS_KSERVE_IMAGE)
    assert container["command"] == ["devmlops", "storage-initializer"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "DEVMLOPS_VERIFICATION" in env  # the plan, from the Pod's annotation
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == "/etc/ssl/custom-certs/cabundle.crt"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_both_clusters_run_the_same_step_functions_in_the_same_order_after_their_own_setup(tmp_path: Path) -> None:
    """What each run executes (``plan``): the cluster's own setup phases, then the story's steps, compared by the
    functions they call, not by their names."""
    images = Images(devmlops=tmp_path / "d.tar", model_server=tmp_path / "m.tar", opa=tmp_path / "o.tar")
    steps = {}
    for kind, cluster in _clusters(tmp_path).items():
        e2e = _e2e(cluster, tmp_path)
        e2e.client = k8s.ApiClient()  # never called: building the plan talks to no API server
        own = cluster.setup_phases(e2e.client, images)
        phases = plan(e2e, images)
        assert [p.name for p in phases[: len(own)]] == [p.name for p in own], kind
        ran = [getattr(p.run, "__func__", None) for p in phases[len(own) :]]
        assert ran == [getattr(p.run, "__func__", None) for p in story(e2e)], kind
        assert all(getattr(p.run, "__self__", None) is e2e for p in phases[len(own) :]), kind
        steps[kind] = ran
    assert steps["local"] == steps["kind"]
    assert steps["local"][0] is E2E.install_chart
    assert steps["local"][-1] is E2E.delete_and_collect
    assert E2E.serve_signed_model in steps["local"]
    assert E2E.tampered_model in steps["local"]


def test_kind_needs_docker_and_kind_and_names_each_missing_one(tmp_path: Path) -> None:
    assert KIND_TOOLS == ("docker", "kind")
    assert missing_tools(lambda tool: None) == ["docker", "kind"]
    assert missing_tools(lambda tool: f"/usr/bin/{tool}" if tool == "docker" else None) == ["kind"]
    assert missing_tools(lambda tool: f"/usr/bin/{tool}") == []


def _run(tmp_path: Path, *argv: str, on_path: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python -m ...`` with a PATH holding only executables named ``on_path`` (they are never run)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in on_path:
        (bin_dir / tool).write_text("#!/bin/sh\nexit 99\n")
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": str(bin_dir), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False
    )


@pytest.mark.parametrize(("on_path", "named"), [((), "docker, kind"), (("docker",), "kind"), (("kind",), "docker")])
def test_the_kind_e2e_exits_2_naming_what_is_missing_before_anything_starts(
    tmp_path: Path, on_path: tuple[str, ...], named: str
) -> None:
    e2e = _run(tmp_path, "-m", "devmlops.harness.e2e", "--cluster", "kind", on_path=on_path)
    assert e2e.returncode == 2, e2e.stdout + e2e.stderr
    assert f"a kind cluster needs Docker and kind; missing on PATH: {named}\n" in e2e.stdout
    assert "devmlops-e2e-" not in e2e.stdout  # no work folder, no image build, no cluster
    check = _run(tmp_path, "-m", "devmlops.harness.kindcluster", "--check", on_path=on_path)
    assert (check.returncode, check.stderr) == (2, f"a kind cluster needs Docker and kind; missing on PATH: {named}\n")


def test_the_kind_check_passes_when_both_are_on_path(tmp_path: Path) -> None:
    check = _run(tmp_path, "-m", "devmlops.harness.kindcluster", "--check", on_path=("docker", "kind"))
    assert (check.returncode, check.stderr) == (0, "")


def test_the_e2e_help_names_both_clusters(tmp_path: Path) -> None:
    done = _run(tmp_path, "-m", "devmlops.harness.e2e", "--help")
    assert done.returncode == 0, done.stderr
    assert "--cluster {local,kind}" in done.stdout
