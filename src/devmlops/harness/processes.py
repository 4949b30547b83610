"""Child processes that never outlive us: own process group, parent-death signal, bounded stop."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from devmlops.errors import HarnessError

__all__ = ["Lifecycle", "ManagedProcess", "free_port", "http_ok"]

_PR_SET_PDEATHSIG = 1


class Lifecycle:
    """``with X(...) as x:`` starts and always stops (also on errors and Ctrl-C)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_ok(url: str, *, timeout: float = 2.0) -> bool:
    """Whether a plain-HTTP URL of a process the harness started answers 200 now (a poll for its readiness: any
    failure to connect or any other status is "not yet")."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the harness's own loopback URLs
            return bool(response.status == 200)
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """One child process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> ManagedProcess:
        # The child gets its own copy of the descriptor; the parent keeps none open.
        with self.log_path.open("ab") as log:
            self._proc = self._spawn(log)
        return self

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise HarnessError(f"could not start {self.name} ({self.argv[0]}): {exc}") from exc

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ensure_running(self) -> None:
        if not self.running():
            code = self._proc.returncode if self._proc else None
            raise HarnessError(f"{self.name} exited (code {code}); last log lines:\n{self.log_tail()}")

    def log_text(self) -> str:
        """The whole log so far ("" when there is none yet)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_text()
        return "\n".join(text.splitlines()[-lines:]) if text else "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout`` seconds."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if proc is not None:
            # Whatever the leader left in its group goes too.
            self._signal_group(proc, signal.SIGKILL)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def wait_until(self, probe: object, *, timeout: float, what: str) -> None:
        """Poll ``probe()`` until it returns true; fail early if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ensure_running()
            if callable(probe) and probe():
                return
            time.sleep(0.1)
        raise HarnessError(f"{self.name}: {what} not reached within {timeout:.0f}s; last log lines:\n{self.log_tail()}")
