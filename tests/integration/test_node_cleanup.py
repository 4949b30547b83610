"""Stopping the node leaves the machine as it was: no sandbox, network namespace, bridge, iptables chain, cgroup, mount
or process, and the sysctls it changed back; so does the cleanup after a node that was killed instead. Its own module,
because each test starts a node of its own (one node per machine) and gives it real state to clean up: running pods,
some behind a Service.

Runs with DEVMLOPS_NODE=1 and skips saying why otherwise, like test_node.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.harness.controlplane import NODE_NAME, ControlPlane
from devmlops.harness.node import BRIDGE, BUSYBOX_IMAGE, STATE_DIR, HostState, cleanup_stale_node, host_leftovers
from tests.integration.conftest import require_node_switch, started_node
from tests.integration.support import eventually

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def node_switch_on() -> None:
    """Before the control plane: a node that is off costs nothing."""
    require_node_switch()


def test_stopping_the_node_removes_every_sandbox_netns_bridge_chain_and_cgroup_it_made(
    node_switch_on: None, control_plane: ControlPlane, tools_dir: Path, admin: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(admin)
    with started_node(control_plane, tools_dir) as node:
        before = node.host_state
        assert before is not None
        assert host_leftovers() != [], "a running node has chains, a bridge and cgroups"
        container = {"name": "sleeper", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never"}
        for name in ("one", "two"):
            spec = {"containers": [container | {"command": ["sleep", "3600"]}], "terminationGracePeriodSeconds": 1}
            core.create_namespaced_pod(
                namespace, {"metadata": {"name": name, "labels": {"app": "sleeper"}}, "spec": spec}
            )
        core.create_namespaced_service(
            namespace,
            {"metadata": {"name": "sleeper"}, "spec": {"selector": {"app": "sleeper"}, "ports": [{"port": 80}]}},
        )

        def running() -> bool:
            pods = core.list_namespaced_pod(namespace).items
            return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

        eventually(running, timeout=120, what="two pods Running on the node")
        sandboxes = node.crictl("pods", "--state", "ready", "--quiet").split()
        assert len(sandboxes) == 2
        netns = list((node.workdir / "containerd" / "state").rglob("cni-*"))
        assert netns, "the sandboxes' network namespaces are mounted under containerd's state folder"
        assert Path(f"/sys/class/net/{BRIDGE}").exists()
        workdir = node.workdir
        # `started_node` stops the node here, with the pods still running: cleanup goes through the CRI.

    assert host_leftovers(before) == []
    assert not workdir.exists()
    assert not STATE_DIR.exists(), "no lock or host state file is left in /run"
    assert not Path(f"/sys/class/net/{BRIDGE}").exists()


# A node in a process of its own, against the test session's control plane (its folder holds the CA and kubeconfigs).
NODE_PROCESS = """
import sys, time
from pathlib import Path
from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.node import Node
tools, workdir = Path(sys.argv[1]), Path(sys.argv[2])
node = Node(ControlPlane(bin_dir=tools, workdir=workdir), bin_dir=tools).start()
print(node.workdir, flush=True)
time.sleep(3600)
"""


def test_a_node_killed_without_stopping_is_cleaned_up_from_its_recorded_host_state(
    node_switch_on: None, control_plane: ControlPlane, tools_dir: Path, admin: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(admin)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", NODE_PROCESS, str(tools_dir), str(control_plane.workdir)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            workdir = Path(proc.stdout.readline().strip())
            assert workdir.is_dir(), f"the node did not start: {workdir} {proc.stdout.read() if proc.poll() else ''}"
            before = HostState.load(STATE_DIR / "host-state.json")
            container = {
                "name": "sleeper",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }
            core.create_namespaced_pod(namespace, {"metadata": {"name": "orphan"}, "spec": {"containers": [container]}})
            eventually(
                lambda: core.read_namespaced_pod("orphan", namespace).status.phase == "Running",
                timeout=120,
                what="a pod Running on the node",
            )
        finally:
            proc.send_signal(signal.SIGKILL)  # no stop(): the kubelet and containerd die with it, the containers do not
            proc.wait(timeout=30)

    left = host_leftovers(before)
    assert any(item.startswith("process ") for item in left), "the pod's shim outlives a killed node"
    assert f"bridge {BRIDGE}" in left

    assert cleanup_stale_node(log=lambda _msg: None) == []

    assert host_leftovers(before) == []
    assert not workdir.exists()
    assert not STATE_DIR.exists()
    with contextlib.suppress(ApiException):
        core.delete_node(NODE_NAME)  # the pod collector then removes the orphan Pod
