"""Several worker processes on one port: each serves, the metrics add up across them, a dead one is replaced, and
none outlives worker 0."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devmlops.adapters.pki import new_ca
from devmlops.core.model import Decision, GateResult
from devmlops.harness.processes import free_port
from devmlops.webhook import WebhookDeps, WebhookSettings
from devmlops.webhook.server import listen, serve_workers
from tests.unit.webhook.test_app import SIGNED, review


def test_listen_lets_workers_share_a_port_over_tcp() -> None:
    port = free_port()
    first = listen("127.0.0.1", port, reuse_port=True)
    second = listen("127.0.0.1", port, reuse_port=True)
    try:
        assert first.proto == second.proto == socket.IPPROTO_TCP
        assert first.getsockname() == second.getsockname()
    finally:
        first.close()
        second.close()


def _deps() -> WebhookDeps:
    """One worker's dependencies (module level: the spawned workers import it by name)."""
    decision = Decision((GateResult(gate="test", outcome="pass", reason="admitted by the test"),))
    return WebhookDeps(
        decide=lambda _request: decision,
        audit=lambda _record: None,
        status=lambda: {"pid": os.getpid()},
        inline_decisions=True,
    )


def _serve(settings: WebhookSettings) -> None:
    serve_workers(settings, _deps)


def _children(pid: int) -> set[int]:
    """Worker processes of ``pid``, started by any of its threads (not multiprocessing's resource tracker)."""
    found = set()
    listed = [c for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()]
    for child in listed:
        try:
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(int(child))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
@pytest.mark.timeout(120)
def test_two_workers_share_the_port_add_up_their_metrics_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    ca = new_ca("ca")
    cert, key = ca.issue("webhook", hosts=["127.0.0.1"]).write(tmp_path, "tls")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    port = free_port()
    settings = WebhookSettings(host="127.0.0.1", port=port, tls_cert=cert, tls_key=key, workers=2)
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(settings,))
    server.start()
    assert server.pid is not None
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))

    def answer(path: str, **kwargs: Any) -> httpx.Response | None:
        """Over a new connection each time: the kernel picks the worker by the connection's port."""
        try:
            with httpx.Client(verify=context, timeout=5) as http:
                return http.request("POST" if path == "/validate" else "GET", f"{url}{path}", **kwargs)
        except httpx.HTTPError:
            return None

    def pids_answering(want: set[int] | None = None, seconds: float = 60) -> set[int]:
        seen: set[int] = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (len(seen) < 2 if want is None else not want <= seen):
            response = answer("/readyz")
            if response is not None and response.status_code == 200:
                seen.add(int(response.json()["pid"]))
            else:
                time.sleep(0.2)
        return seen

    try:
        first = pids_answering()
        assert first == {server.pid} | _children(server.pid)
        assert len(first) == 2

        answers = [answer("/validate", content=json.dumps(review(SIGNED))) for _ in range(20)]
        assert all(a is not None and a.json()["response"]["allowed"] for a in answers)
        metrics = answer("/metrics")
        assert metrics is not None
        assert 'devmlops_admission_requests_total{allowed="true",kind="ModelDeployment",mode="enforce",' in metrics.text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.text.splitlines()
            if line.startswith("devmlops_admission_requests_total{")
        )
        assert counted == 20

        (child,) = _children(server.pid)
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (_children(server.pid) - {child}):
            time.sleep(0.2)
        (replacement,) = _children(server.pid) - {child}
        assert pids_answering({server.pid, replacement}) >= {server.pid, replacement}
    finally:
        survivors = _children(server.pid)
        server.terminate()
        server.join(30)
    assert server.exitcode is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in survivors):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in survivors)
