"""The node's switch never fails silently: off, or unable to start here, it says so and why."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.node import NODE_TOOLS, Node, NodeUnavailableError, node_problems, optional_node

# The switch and the preflight never touch the control plane; a node that could start would need a real one.
NO_CONTROL_PLANE = cast(ControlPlane, None)


def test_a_tools_folder_without_the_node_binaries_is_a_reason_naming_them_and_make_tools(tmp_path: Path) -> None:
    problems = node_problems(tmp_path)

    (missing,) = [p for p in problems if "lacks" in p]
    for tool in NODE_TOOLS:
        assert tool in missing
    assert "make tools" in missing


def test_starting_without_the_binaries_raises_node_unavailable_with_every_reason(tmp_path: Path) -> None:
    with pytest.raises(NodeUnavailableError) as raised:
        Node(NO_CONTROL_PLANE, bin_dir=tmp_path).start()

    assert raised.value.user_message.startswith("the local node cannot start here: ")
    assert "kubelet" in raised.value.user_message


def test_switched_off_the_stack_says_so_and_runs_without_a_node(tmp_path: Path) -> None:
    said: list[str] = []
    with optional_node(NO_CONTROL_PLANE, bin_dir=tmp_path, enabled=False, log=said.append) as node:
        assert node is None
    assert said == ["node: off (DEVMLOPS_NODE=1 runs Pods on this machine); Pods stay Pending"]


def test_switched_on_where_it_cannot_start_the_stack_says_why_and_runs_without_a_node(tmp_path: Path) -> None:
    said: list[str] = []
    with optional_node(NO_CONTROL_PLANE, bin_dir=tmp_path, enabled=True, log=said.append) as node:
        assert node is None
    (message,) = said
    assert message.startswith("node: not started: the local node cannot start here: ")
    assert "lacks kubelet" in message
    assert message.endswith("; Pods stay Pending")
