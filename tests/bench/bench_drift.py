"""Benchmark: what the guard's drift and probing signals cost, per 1,000 requests, next to the guard's own cost.

Two measurements in one run, on scikit-learn's bundled breast cancer data (30 features; the baseline from one half,
the requests from the other):

1. In process, the signals' code path exactly as the guard runs it for a forwarded v2 request whose body is already
   parsed (the schema check parses it): the first tensor read into rows, the rows binned into the sliding sample,
   the fingerprint and the probing window; for 1 and 20 rows a request. And a scrape: PSI and KS of every feature,
   and the whole exposition of the guard's registry.
2. The real guard process (`devmlops guard`) in front of a local test server, once with the v2 schema only and once
   with drift monitoring and a baseline, 2,000 sequential requests each, interleaved rounds: the guard's CPU time
   per request from /proc (client and upstream not counted).

Run with `make bench-drift`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PATH = "/v2/models/cancer/infer"
PLAIN, DRIFT = "v2 schema only", "v2 schema, drift and probing"


def _bodies(rows: Any, per_request: int, count: int) -> list[bytes]:
    bodies = []
    for index in range(count):
        start = (index * per_request) % (len(rows) - per_request)
        part = [[float(v) for v in row] for row in rows[start : start + per_request]]
        tensor = {"name": "x", "shape": [len(part), len(part[0])], "datatype": "FP64", "data": part}
        bodies.append(json.dumps({"inputs": [tensor]}).encode())
    return bodies


def _best_of(rounds: int, run: Callable[[], float]) -> float:
    return median(run() for _ in range(rounds))


def in_process(baseline: Any, rows: Any, rounds: int) -> dict[str, float]:
    """Microseconds: per request (1 and 20 rows), per scrape (statistics, whole exposition)."""
    from devmlops.core.drift import DriftSample, first_tensor_rows
    from devmlops.core.probing import ProbeWindow, exact_hash, fingerprint
    from devmlops.guard.metrics import GuardMetrics

    figures: dict[str, float] = {}
    for per_request in (1, 20):
        bodies = _bodies(rows, per_request, 1000)
        parsed = [json.loads(b) for b in bodies]

        def run(bodies: list[bytes] = bodies, parsed: list[Any] = parsed) -> float:
            sample, window = DriftSample(baseline, 1000), ProbeWindow()
            started = time.perf_counter()
            for index, (body, document) in enumerate(zip(bodies, parsed, strict=True)):
                values, columns = first_tensor_rows(document, max_values=1_000_000)
                sample.add(values, columns)
                window.is_probe(f"client-{index % 50}", fingerprint(values, columns), exact_hash(body), float(index))
            return (time.perf_counter() - started) * 1e6 / len(bodies)

        figures[f"request_{per_request}"] = _best_of(rounds, run)
    sample = DriftSample(baseline, 1000)
    for document in (json.loads(b) for b in _bodies(rows, 20, 50)):
        sample.add(*first_tensor_rows(document, max_values=1_000_000))

    def scrape() -> float:
        started = time.perf_counter()
        for _ in range(100):
            sample.statistics()
        return (time.perf_counter() - started) * 1e6 / 100

    figures["statistics"] = _best_of(rounds, scrape)
    metrics = GuardMetrics.create()
    metrics.watch_drift("cancer", "sha256:" + "ab" * 32, sample, 0.2)
    from prometheus_client import generate_latest

    def exposition() -> float:
        started = time.perf_counter()
        for _ in range(100):
            generate_latest(metrics.registry)
        return (time.perf_counter() - started) * 1e6 / 100

    figures["exposition"] = _best_of(rounds, exposition)
    return figures


def guard_process(baseline: Any, rows: Any, rounds: int, requests: int) -> dict[str, list[float]]:
    """The real guard's CPU microseconds per request, without and with drift monitoring, by round."""
    import httpx

    from devmlops.harness.processes import ManagedProcess, free_port, http_ok
    from tests.bench.bench_webhook import cpu_seconds
    from tests.support.modelservers import ChatServer

    configs = {
        PLAIN: {"protocol": "v2"},
        "v2 schema, drift and probing": {
            "protocol": "v2",
            "drift": {"sampleSize": 1000},
            "baseline": baseline.to_dict(),
        },
    }
    bodies = _bodies(rows, 1, requests)
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp, ChatServer() as upstream:
        guards = {}
        try:
            for name, config in configs.items():
                port, metrics = free_port(), free_port()
                argv = [sys.executable, "-m", "devmlops", "guard", f"--upstream={upstream.url}"]
                argv += [f"--listen=127.0.0.1:{port}", f"--metrics-listen=127.0.0.1:{metrics}", "--model=cancer"]
                argv += ["--digest=sha256:" + "ab" * 32, "--config=" + json.dumps(config)]
                log = Path(tmp) / f"guard-{port}.log"
                process = ManagedProcess("guard", argv, log_path=log, env=dict(os.environ)).start()
                process.wait_until(lambda m=metrics: http_ok(f"http://127.0.0.1:{m}/healthz"), timeout=30, what="guard")
                guards[name] = (process, f"http://127.0.0.1:{port}{PATH}", f"http://127.0.0.1:{metrics}/metrics")
            with httpx.Client(timeout=30) as http:
                for _process, url, _metrics in guards.values():  # warm
                    for body in bodies[:200]:
                        http.post(url, content=body, headers={"content-type": "application/json"})
                for _ in range(rounds):
                    for name, (process, url, _metrics) in guards.items():
                        before = cpu_seconds(process.pid or 0)
                        for body in bodies:
                            answer = http.post(url, content=body, headers={"content-type": "application/json"})
                            if answer.status_code != 200:
                                raise SystemExit(f"{name}: {answer.status_code} {answer.text[:200]}")
                        cpu[name].append((cpu_seconds(process.pid or 0) - before) * 1e6 / len(bodies))
                        print(f"{name:30} {cpu[name][-1]:7.0f} µs CPU per request", flush=True)
                exposed = httpx.get(guards[DRIFT][2], timeout=5).text
                psi = exposed.count("devmlops_guard_drift_psi{")
                if psi != 30:
                    raise SystemExit(f"expected 30 PSI series from the drift guard, found {psi}")
        finally:
            for process, _url, _metrics in guards.values():
                process.stop()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="requests to the guard process per round")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from sklearn.datasets import load_breast_cancer

    from devmlops.core.drift import baseline_from_columns
    from tests.bench.report import write_section

    data = load_breast_cancer()
    reference, rows = data.data[0::2], data.data[1::2]
    names = [str(n) for n in data.feature_names]
    baseline = baseline_from_columns([reference[:, i].tolist() for i in range(reference.shape[1])], names)
    micro = in_process(baseline, rows, args.rounds)
    cpu = guard_process(baseline, rows, args.rounds, args.requests)
    text = report(micro, cpu, args)
    print(text)
    write_section(args.output, text)


def report(micro: dict[str, float], cpu: dict[str, list[float]], args: Any) -> str:
    plain, drift = (median(values) for values in cpu.values())
    command = (
        f"`make bench-drift` (python -m tests.bench.bench_drift --rounds {args.rounds} --requests {args.requests})"
    )
    return "\n".join(
        [
            "## Serving guard: drift and probing signals",
            "",
            f"Command: {command}  ",
            "scikit-learn's breast cancer data (30 features, 10 quantile bins each; baseline from one half, requests "
            "from the other). In process: the signals' code path as the guard runs it on an already parsed v2 body "
            "(rows read, binned into a 1,000-row sliding sample, fingerprinted, checked against the client's "
            f"probing window), medians of {args.rounds} rounds. Process: the real guard in front of a local test "
            f"server, {args.requests:,} sequential one-row requests a round, the guard's CPU time from /proc.",
            "",
            "| figure | per request | per 1,000 requests |",
            "|---|---:|---:|",
            f"| signals, 1 row a request (in process) | {micro['request_1']:.1f} µs | {micro['request_1']:.1f} ms |",
            f"| signals, 20 rows a request (in process) | {micro['request_20']:.1f} µs | "
            f"{micro['request_20']:.1f} ms |",
            f"| guard CPU, v2 schema only (process) | {plain:.0f} µs | {plain:.0f} ms |",
            f"| guard CPU, v2 schema, drift and probing (process) | {drift:.0f} µs | {drift:.0f} ms |",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| signals (1 row) / guard CPU without them | {100 * micro['request_1'] / plain:.1f} % |",
            f"| guard CPU with / without drift (process, min-max of rounds) | {100 * (drift / plain - 1):+.1f} % "
            f"({min(cpu[DRIFT]):.0f}-{max(cpu[DRIFT]):.0f} µs against "
            f"{min(cpu[PLAIN]):.0f}-{max(cpu[PLAIN]):.0f} µs) |",
            f"| a scrape's PSI and KS of 30 features | {micro['statistics']:.0f} µs |",
            f"| a scrape's whole exposition of the guard's registry | {micro['exposition']:.0f} µs |",
            "",
            "The guard process's CPU per request varies between rounds by more than the signals cost (the machine is "
            "shared); a difference within that spread is no reading. The in-process figure is the signals' cost.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
