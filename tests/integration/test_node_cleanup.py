"""Stopping the node leaves the machine as it was: no sandbox, network namespace, bridge, iptables chain, cgroup, mount
or process, and the sysctls it changed back. Its own module, because it starts and stops a node of its own (one node
per machine) after giving it real state to clean up: running pods, one behind a Service.

Runs with DEVMLOPS_NODE=1 and skips saying why otherwise, like test_node.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client as k8s

from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.node import BRIDGE, BUSYBOX_IMAGE, STATE_DIR, host_leftovers
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
