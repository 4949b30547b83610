"""A real Prometheus on loopback for the tests of the rollout analysis: the server's ``cmd/prometheus`` built once by
``go install`` from the Go module proxy into ``~/.cache/devmlops/prometheus/prometheus-<v>/prometheus`` (5 min 14 s
on 2 cores, its module downloads included; ``make registries`` does it before the tests).

It scrapes every second whatever the caller lists in a file-based service discovery file (``set_targets``), each
target with labels of its own, such as the ``namespace`` and ``pod`` labels the Prometheus Operator adds to what a
PodMonitor scrapes in a cluster (charts/devmlops/templates/monitoring/podmonitor.yaml); the queries the operator
runs see the same label names here and there. Prometheus picks a rewritten file up through inotify and applies new
targets within its 5 s target-update throttle. The TSDB lives in the caller's folder, kept for an hour.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from devmlops.harness.processes import Lifecycle, ManagedProcess, free_port, http_ok
from devmlops.harness.toolcache import cache_root, go_install

__all__ = ["PROMETHEUS_VERSION", "Prometheus", "ScrapeTarget", "installed_prometheus", "prometheus_binary"]

PROMETHEUS_VERSION = "v0.316.0"  # the Go module version of Prometheus 3.16.0
_MODULE = f"github.com/prometheus/prometheus/cmd/prometheus@{PROMETHEUS_VERSION}"
_JOB = "devmlops"


def installed_prometheus() -> Path:
    """Where the binary is (or will be) in the cache; it may not exist yet."""
    return cache_root() / "prometheus" / f"prometheus-{PROMETHEUS_VERSION}" / "prometheus"


def prometheus_binary(log: Callable[[str], None] = lambda _m: None) -> Path:
    """The binary, built with ``go install`` when it is missing."""
    return go_install(_MODULE, installed_prometheus(), log=log, minutes="5")


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """``host:port`` of a ``/metrics`` endpoint and the labels Prometheus attaches to everything scraped there."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


class Prometheus(Lifecycle):
    """``with Prometheus(workdir) as prometheus:`` a ready server at ``prometheus.url`` scraping no target yet."""

    def __init__(
        self, workdir: Path, *, binary: Path | None = None, retention: str = "1h", rule_files: Sequence[Path] = ()
    ) -> None:
        self.workdir = workdir
        self._rule_files = tuple(rule_files)  # alerting and recording rules Prometheus loads (and checks) at start
        self._binary = binary
        self._retention = retention
        self._targets_file = workdir / "targets" / "targets.json"
        self.url = ""
        self._process: ManagedProcess | None = None

    def set_targets(self, targets: Sequence[ScrapeTarget]) -> None:
        """Replace what Prometheus scrapes (atomically: it never reads a half-written file)."""
        groups = [{"targets": [target.address], "labels": dict(target.labels)} for target in targets]
        partial = self._targets_file.with_name(".targets.json.tmp")  # not *.json: outside the files pattern
        partial.write_text(json.dumps(groups))
        os.replace(partial, self._targets_file)

    def start(self) -> Self:
        binary = self._binary or prometheus_binary()
        self._targets_file.parent.mkdir(parents=True, exist_ok=True)
        self.set_targets([])
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._process = ManagedProcess(
            "prometheus",
            [
                str(binary), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={self.workdir / 'data'}", f"--storage.tsdb.retention.time={self._retention}",
                "--log.level=warn",
            ],
            log_path=self.workdir / "prometheus.log", cwd=self.workdir,
        ).start()  # fmt: skip
        try:
            self._process.wait_until(lambda: http_ok(self.url + "/-/ready"), timeout=60, what="Prometheus /-/ready")
        except BaseException:
            self._process.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def _config(self) -> dict[str, object]:
        return {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in self._rule_files],
            "scrape_configs": [
                {
                    "job_name": _JOB,
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(self._targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
