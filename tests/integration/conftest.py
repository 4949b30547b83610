"""The session-scoped local control plane and devmlops stack that integration tests share."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from devmlops.adapters.kube import api_client
from devmlops.errors import HarnessError
from devmlops.harness.controlplane import CONTROLLER_MANAGER, ControlPlane, find_tools
from devmlops.harness.kserve import KServe, find_kserve, local_cluster
from devmlops.harness.stack import DevmlopsStack
from tests.conftest import ROOT


def _tools_dir() -> Path:
    configured = os.environ.get("DEVMLOPS_TOOLS_DIR") or os.environ.get("KUBEBUILDER_ASSETS")
    if configured and Path(configured, "kube-apiserver").exists():
        # A folder with kube-apiserver but not the controllers (a KUBEBUILDER_ASSETS folder, say) fails: the tests
        # would otherwise pass or skip without the behaviour they are about.
        incomplete = ""
        try:
            find_kserve(find_tools(Path(configured), (CONTROLLER_MANAGER,)))
        except HarnessError as exc:
            incomplete = exc.user_message
        if incomplete:
            pytest.fail(incomplete, pytrace=False)
        return Path(configured)
    message = "no control-plane tools: run `make tools` and set DEVMLOPS_TOOLS_DIR (`make test` does both)"
    if os.environ.get("DEVMLOPS_REQUIRE_INTEGRATION"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tools_dir() -> Path:
    return _tools_dir()


@pytest.fixture(scope="session")
def running_cluster(tools_dir: Path) -> Iterator[tuple[ControlPlane, KServe]]:
    """The API server with kube-controller-manager and the real KServe controller and webhooks (the devmlops
    ClusterStorageContainer installed): every integration test sees the controllers a cluster has."""
    with local_cluster(bin_dir=tools_dir, project_dir=ROOT) as running:
        yield running


@pytest.fixture(scope="session")
def control_plane(running_cluster: tuple[ControlPlane, KServe]) -> ControlPlane:
    return running_cluster[0]


@pytest.fixture(scope="session")
def kserve(running_cluster: tuple[ControlPlane, KServe]) -> KServe:
    return running_cluster[1]


@pytest.fixture(scope="session")
def policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of policies/ that OPA watches, so tests may edit Rego live without touching the checkout."""
    copy = tmp_path_factory.mktemp("rego") / "policies"
    shutil.copytree(ROOT / "policies", copy)
    return copy


@pytest.fixture(scope="session")
def stack(control_plane: ControlPlane, policies_dir: Path) -> Iterator[DevmlopsStack]:
    with DevmlopsStack(control_plane, policies=policies_dir) as running:
        yield running


@pytest.fixture
def admin(control_plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    with api_client(control_plane.kubeconfig("admin")) as client:
        yield client


@pytest.fixture
def namespace(admin: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, so tests do not see each other's objects."""
    name = "t-" + re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:50].strip("-")
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)
