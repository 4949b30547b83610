"""The session-scoped local control plane and devmlops stack that integration tests share."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
from kubernetes import client as k8s

from devmlops.adapters.kube import api_client
from devmlops.errors import HarnessError
from devmlops.harness.controlplane import CONTROLLER_MANAGER, ControlPlane, find_tools
from devmlops.harness.kserve import KServe, find_kserve, local_cluster
from devmlops.harness.node import Node, NodeUnavailableError, node_problems
from devmlops.harness.prometheus import Prometheus, installed_prometheus
from devmlops.harness.stack import DevmlopsStack
from tests.conftest import ROOT
from tests.support.guards import Guard, start_guard_process
from tests.support.modelservers import ChatServer, mlserver


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
    skip_or_fail_integration(
        "no control-plane tools: run `make tools` and set DEVMLOPS_TOOLS_DIR (`make test` does both)"
    )


def skip_or_fail_integration(reason: str) -> NoReturn:
    """Skip a test whose tools are missing here; with DEVMLOPS_REQUIRE_INTEGRATION=1 (`make test`, CI) fail it: a
    test that skips where it must run would pass without the behaviour it is about."""
    if os.environ.get("DEVMLOPS_REQUIRE_INTEGRATION"):
        pytest.fail(f"{reason} (DEVMLOPS_REQUIRE_INTEGRATION=1)", pytrace=False)
    pytest.skip(reason)


NODE_SWITCH = "DEVMLOPS_NODE"
NODE_REQUIRED = "DEVMLOPS_REQUIRE_NODE"


def node_wanted() -> bool:
    """The local node runs with DEVMLOPS_NODE=1 (root, Debian's packages); DEVMLOPS_REQUIRE_NODE=1 implies it and turns
    every reason to skip its tests into a failure (`.ci/run` sets both as root)."""
    return os.environ.get(NODE_SWITCH) == "1" or os.environ.get(NODE_REQUIRED) == "1"


def skip_or_fail_node(reason: str) -> None:
    if os.environ.get(NODE_REQUIRED) == "1":
        pytest.fail(f"{reason} ({NODE_REQUIRED}=1)", pytrace=False)
    pytest.skip(reason)


def pytest_report_header() -> list[str]:
    """Say up front whether the node tests will run, and if not, why (never a silent skip)."""
    tools = os.environ.get("DEVMLOPS_TOOLS_DIR") or os.environ.get("KUBEBUILDER_ASSETS")
    problems = node_problems(Path(tools)) if tools else ["no DEVMLOPS_TOOLS_DIR"]
    if not node_wanted():
        could = "it could run here" if not problems else "it could not run here: " + "; ".join(problems)
        return [f"devmlops local node: off (set {NODE_SWITCH}=1 to run tests/integration/test_node*.py; {could})"]
    if problems:
        return ["devmlops local node: on, but cannot start here: " + "; ".join(problems)]
    return ["devmlops local node: on (containerd, kubelet, kube-scheduler, kube-proxy on this machine)"]


def require_node_switch() -> None:
    if not node_wanted():
        skip_or_fail_node(
            f"the local node is off: set {NODE_SWITCH}=1 (root, Debian's containerd; docs/development.md)"
        )


@contextmanager
def started_node(control_plane: ControlPlane, tools_dir: Path) -> Iterator[Node]:
    """A node beside ``control_plane``; the test skips (fails with DEVMLOPS_REQUIRE_NODE=1) when the node is switched
    off or this machine cannot run it. A node that can start but then fails is a failure either way."""
    require_node_switch()
    try:
        node = Node(control_plane, bin_dir=tools_dir).start()
    except NodeUnavailableError as exc:
        skip_or_fail_node(exc.user_message)
        raise  # unreachable: skip and fail raise
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    """A node for one test module (the node is one per machine: a module that needs its own starts it itself). The
    switch is read first, so a node that is off costs no control plane."""
    require_node_switch()
    control_plane: ControlPlane = request.getfixturevalue("control_plane")
    with started_node(control_plane, request.getfixturevalue("tools_dir")) as running:
        yield running


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


_LOG_LINES = 60  # of each of the operator's and the webhook's logs, in a failed test's report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran on the stack gets the operator's and the webhook's last log lines about its namespaces
    in its report. CI prints only the report, and what the operator did under a loaded machine (a flake seen once)
    is otherwise gone with the run's temporary folders."""
    outcome: Any = yield
    report = outcome.get_result()
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    stack = funcargs.get("stack")
    if not report.failed or not isinstance(stack, DevmlopsStack):
        return
    namespaces = {v for k, v in funcargs.items() if isinstance(v, str) and ("namespace" in k or k == "team")}
    for process in (stack.operator, stack.webhook):
        if process is None:
            continue
        lines = process.log_text().splitlines()
        about = [line for line in lines if any(n in line for n in namespaces)] if namespaces else lines
        shown = "\n".join(about[-_LOG_LINES:]) or "\n".join(["(none names them; its last lines)", *lines[-20:]])
        report.sections.append((f"{process.name} log, the last lines about {sorted(namespaces)}", shown))


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


# -- the serving guard's tests (test_guard.py, test_guard_signals.py) -------------------------------------------------


@pytest.fixture
def start_guard(tmp_path: Path) -> Iterator[Callable[..., Guard]]:
    """Start real guard processes (tests/support/guards.py); each is stopped after the test."""
    started: list[Guard] = []

    def start(upstream: str, config: dict[str, Any], *, model: str = "m") -> Guard:
        started.append(start_guard_process(tmp_path, upstream, config, model=model))
        return started[-1]

    yield start
    for guard in started:
        guard.process.stop()


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLServer serving scikit-learn's iris model over the v2 protocol."""
    with mlserver(tmp_path_factory.mktemp("mlserver")) as url:
        yield url


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with ChatServer() as server:
        yield server


# -- a real Prometheus (test_prometheus.py, test_rollout.py, test_retrain.py) -----------------------------------------


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    path = installed_prometheus()
    if not path.exists():
        skip_or_fail_integration(f"no Prometheus at {path}: `make registries` builds it (go install, once)")
    return path


@pytest.fixture
def prometheus(prometheus_binary: Path, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus on loopback scraping every second the targets a test sets (``set_targets``)."""
    with Prometheus(tmp_path / "prometheus", binary=prometheus_binary) as running:
        yield running
