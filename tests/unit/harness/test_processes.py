from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from devmlops.errors import HarnessError
from devmlops.harness.processes import ManagedProcess, free_port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purpose.
    status = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return status not in ("Z", "X")


def test_stop_ends_the_process_and_the_children_it_spawned(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess,time; p=subprocess.Popen(['sleep','60']); "
        f"open({str(pidfile)!r},'w').write(str(p.pid)); time.sleep(60)"
    )
    proc = ManagedProcess("sleeper", [sys.executable, "-c", script], log_path=tmp_path / "log").start()
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the child never wrote its grandchild's pid"
        time.sleep(0.05)
    grandchild, pid = int(pidfile.read_text()), proc.pid
    assert pid is not None
    proc.stop(timeout=5)
    time.sleep(0.2)
    assert not alive(pid)
    assert not alive(grandchild)


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    script = (
        "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    proc = ManagedProcess("stubborn", [sys.executable, "-c", script], log_path=tmp_path / "log").start()
    proc.wait_until(lambda: "up" in proc.log_tail(), timeout=10, what="start")
    started = time.monotonic()
    proc.stop(timeout=0.5)
    assert not proc.running()
    assert time.monotonic() - started < 5


def test_waiting_on_a_process_that_died_reports_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "crasher", [sys.executable, "-c", "print('bad flag'); raise SystemExit(3)"], log_path=tmp_path / "log"
    ).start()
    with pytest.raises(HarnessError, match=r"crasher exited \(code 3\)[\s\S]*bad flag"):
        proc.wait_until(lambda: False, timeout=10, what="readiness")


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="could not start ghost"):
        ManagedProcess("ghost", [str(tmp_path / "nope")], log_path=tmp_path / "log").start()


def test_free_port_returns_a_bindable_loopback_port() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_child_dies_with_its_parent_even_when_the_parent_is_killed_hard(tmp_path: Path) -> None:
    import signal
    import subprocess

    pidfile = tmp_path / "child.pid"
    parent_script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from devmlops.harness.processes import ManagedProcess\n"
        f"proc = ManagedProcess('sleeper', ['sleep', '60'], log_path=Path({str(tmp_path / 'log')!r})).start()\n"
        f"Path({str(pidfile)!r}).write_text(str(proc.pid))\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script])
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the parent never started its child"
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)  # no cleanup code can run in the parent
        parent.wait(10)
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the child outlived a SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
