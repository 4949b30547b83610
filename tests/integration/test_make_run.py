"""`make run` end to end: the demo's table, its exit code with RUN_ONCE, and a clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from devmlops.harness.controlplane import ControlPlane
from tests.conftest import ROOT


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def demo(control_plane: ControlPlane, *, once: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "DEVMLOPS_TOOLS_DIR": str(control_plane.bin_dir), "PYTHONUNBUFFERED": "1"}
    # `make run` without a node (the table is about admission); the node has tests of its own (test_node*.py).
    env.pop("DEVMLOPS_NODE", None)
    if once:
        env["RUN_ONCE"] = "1"
    else:
        env.pop("RUN_ONCE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "devmlops", "local", "--project-dir", str(ROOT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_run_once_prints_what_was_admitted_denied_and_rejected_and_exits_zero(
    control_plane: ControlPlane,
) -> None:
    proc = demo(control_plane, once=True)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "node: off (DEVMLOPS_NODE=1 runs Pods on this machine); Pods stay Pending" in output
    # The admitted sample's chain, object by object, as the cluster's controllers made it (Pods Pending: no node).
    chain = output.split("the chain of ModelDeployment default/fraud-detector, as the cluster made it:", 1)[1]
    assert "InferenceService/fraud-detector" in chain
    assert re.search(r"Deployment/fraud-detector-predictor\s", chain), chain[:800]
    assert re.search(r"ReplicaSet/fraud-detector-predictor-\w+", chain), chain[:800]
    assert re.search(r"Pod/fraud-detector-predictor-\S+\s+Pending on no node; init \['storage-initializer'\]", chain), (
        chain[:800]
    )
    rows = {line.split()[0]: line for line in output.splitlines() if line.startswith("ModelDeployment/")}
    assert rows["ModelDeployment/fraud-detector"].split()[1:4] == [
        "admitted",
        "admitted",
        "InferenceService/fraud-detector",
    ]
    reasons = {
        "churn-predictor": "spec.signature is missing",
        "fraud-detector-canary": "spec.model.digest: got sha256:",
        "fraud-detector-scratch": "allowlist gate (policy production-models): spec.model.uri",
        "fraud-detector-rogue": "got 0 verified authorities",
    }
    for name, reason in reasons.items():
        assert rows[f"ModelDeployment/{name}"].split()[1:3] == ["denied", "denied"]
        assert reason in rows[f"ModelDeployment/{name}"]
    assert rows["ModelDeployment/malformed-digest"].split()[1:3] == ["rejected", "rejected"]
    assert rows["ModelDeployment/credit-scoring"].split()[1:4] == ["admitted", "admitted", "(awaiting"]
    assert "risk tier prohibited: the policy never admits this tier" in rows["ModelDeployment/face-recognition-public"]
    assert "credit-scoring (high risk) is AwaitingApproval" in output
    assert "bob approved it (requested by admin): now served by InferenceService/credit-scoring" in output
    assert "fraud-detector-v2 before the Rego edit: admitted" in output
    assert (
        "(no restart): denied by devmlops: rego gate (policy production-models): devmlops.eu_ai_act: change freeze"
        in output
    )
    evidence = {line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("[devmlops] evidence: ")}
    assert any(
        line.startswith("diabetes-unfair (ModelDeployment evidence-demo/diabetes): denied: ")
        and "evidence gate (policy evidence-demo): evidence 'fairness': spec.attestations[0], signed by key" in line
        and "demographic parity difference for 'sex': found 0." in line
        and "expected at most 0.1" in line
        for line in evidence
    ), evidence
    assert any(
        line.startswith("diabetes-poisoned (ModelDeployment evidence-demo/diabetes): denied: ")
        and "evidence 'scan': spec.attestations[1]" in line
        and "unsafe files: found 1 (preprocess.pkl (os.system)), expected at most 0" in line
        for line in evidence
    ), evidence
    assert "diabetes-fixed (ModelDeployment evidence-demo/diabetes): admitted: created" in evidence
    assert "fraud-detector version 1 registered, signature stored with it, alias champion" in output
    assert (
        "fraud-detector-champion names only MLflow alias champion: admitted, served by "
        "InferenceService/fraud-detector-champion" in output
    )
    assert "status.registryVersion: MLflow http://127.0.0.1:" in output
    assert (
        "model 'fraud-detector' alias champion (version 1): stored at 's3://models-prod/fraud-detector/2.3.0'" in output
    )
    assert "ClusterModelPolicy signed-runtime-images: Triton images must be signed by platform-images" in output
    assert re.search(
        r"fraud-detector-triton on 127\.0\.0\.1:\d+/nvidia/tritonserver@sha256:[0-9a-f]{64} \(pushed to the OCI "
        r"registry at 127\.0\.0\.1:\d+, unsigned\): denied by devmlops: image-signature gate \(policy "
        r"signed-runtime-images\): spec\.runtime\.image '[^']+': got no signature attached",
        output,
    ), output
    assert "UNEXPECTED" not in output


def test_ctrl_c_stops_the_demo_and_every_process_it_started(control_plane: ControlPlane) -> None:
    proc = demo(control_plane, once=False)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "press Ctrl-C" in line or not line:
            break
    assert any("press Ctrl-C" in line for line in seen), "".join(seen)
    started = children_of(proc.pid)
    assert len(started) >= 4, f"expected etcd, kube-apiserver, webhook and operator, got {started}"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    time.sleep(0.5)
    assert [pid for pid in started if alive(pid)] == []
