"""Benchmark: /validate over TLS on one uvicorn worker, warm and cold verification cache, beside a bare FastAPI
endpoint on the same server that returns a fixed AdmissionReview (the stack's ceiling).

Run with `make bench`. The server runs in its own process (one worker); the load comes from another process over
loopback with keep-alive connections. Figures are written to stdout and to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _review(bundle: str, digest: str, sbom: str, uid: int) -> dict[str, Any]:
    spec = {
        "model": {"name": "fraud", "uri": "s3://models/fraud", "format": "sklearn", "digest": digest},
        "runtime": {"kind": "kserve"},
        "signature": {"inline": bundle},
        "sbom": {"document": {"inline": sbom}},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"bench-{uid}",
            "kind": {"group": "devmlops.io", "version": "v1alpha1", "kind": "ModelDeployment"},
            "operation": "CREATE",
            "namespace": "bench",
            "name": "fraud",
            "userInfo": {"username": "bench"},
            "object": {
                "metadata": {
                    "name": "fraud",
                    "namespace": "bench",
                    "annotations": {"devmlops.io/requested-by": "bench"},
                },
                "spec": spec,
            },
        },
    }


def _serve(workdir: str, port: int, cached: bool) -> None:
    """The server process: the real webhook app (real OmsVerifier), plus /bare on the same app."""
    import logging

    import uvicorn
    from fastapi.responses import JSONResponse

    from devmlops.adapters.oms import OmsVerifier
    from devmlops.adapters.verifycache import CachingVerifier
    from devmlops.core.policy import PolicySet, compile_policy
    from devmlops.webhook.app import WebhookDeps, create_app
    from devmlops.webhook.service import AdmissionService
    from devmlops.webhook.settings import WebhookSettings
    from tests.support.lookups import EmptyCluster

    logging.disable(logging.CRITICAL)
    folder = Path(workdir)
    policy = compile_policy(
        {
            "metadata": {"name": "bench", "resourceVersion": "1"},
            "spec": {
                "authorities": [{"name": "release", "key": {"publicKey": (folder / "signer.pub").read_text()}}],
                "sbom": {"required": True},
                "allow": {"storageUris": ["s3://models/**"]},
            },
        }
    )

    verifier: Any = CachingVerifier(OmsVerifier()) if cached else OmsVerifier()
    service = AdmissionService(policies=lambda: PolicySet((policy,)), lookup=EmptyCluster(), verifier=verifier)
    settings = WebhookSettings(tls_cert=folder / "tls.crt", tls_key=folder / "tls.key", decision_workers=4)
    app = create_app(settings, WebhookDeps(decide=service.decide, audit=lambda _r: None))
    fixed = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "x", "allowed": True}}

    @app.post("/bare")
    async def bare() -> JSONResponse:
        return JSONResponse(fixed)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(settings.tls_cert),
        ssl_keyfile=str(settings.tls_key),
        log_level="critical",
        access_log=False,
        workers=1,
    )


def _load(url: str, bodies: list[bytes], ca: Path, concurrency: int) -> tuple[float, list[float], int]:
    """Send every body once, ``concurrency`` keep-alive connections at a time; return (seconds, latencies, denials)."""
    latencies: list[float] = []
    denials = 0

    def worker(chunk: list[bytes]) -> tuple[list[float], int]:
        own, denied = [], 0
        with httpx.Client(verify=str(ca), timeout=30) as client:
            for body in chunk:
                started = time.perf_counter()
                response = client.post(url, content=body, headers={"Content-Type": "application/json"})
                own.append(time.perf_counter() - started)
                if not response.json()["response"]["allowed"]:
                    denied += 1
        return own, denied

    chunks = [bodies[i::concurrency] for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for own, denied in pool.map(worker, chunks):
            latencies += own
            denials += denied
    return time.perf_counter() - started, latencies, denials


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _wait_up(url: str, ca: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, verify=str(ca), timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


def _prepare(workdir: Path) -> tuple[str, str, str]:
    from devmlops.adapters.oms import OmsVerifier
    from devmlops.adapters.pki import new_ca
    from devmlops.core.policy import Authority
    from tests.support.models import make_key, make_model, sign_with_key

    ca = new_ca("bench-ca")
    (workdir / "ca.crt").write_bytes(ca.cert_pem)
    ca.issue("bench", hosts=["127.0.0.1"]).write(workdir, "tls")
    key = make_key(workdir, "signer")
    bundle = sign_with_key(make_model(workdir / "model"), key, workdir / "model.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key.public_pem)).digest
    component = {
        "type": "machine-learning-model",
        "name": "fraud",
        "hashes": [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}],
    }
    sbom = json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": [component]})
    return bundle, digest, sbom


def _loadgen(workdir: Path) -> Path:
    """Build the Go load generator (standard library only) into ``workdir``."""
    import subprocess

    binary = workdir / "loadgen"
    subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=Path(__file__).parent / "loadgen",
        check=True,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
    )
    return binary


def saturation(requests: int, seconds: float) -> dict[str, Any]:
    """Warm /validate: its capacity (closed loop, 16 connections), then an open-loop arrival rate of twice that."""
    import subprocess

    from devmlops.harness.processes import free_port

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle, digest, sbom = _prepare(workdir)
        bodies = workdir / "bodies.jsonl"
        bodies.write_text("\n".join(json.dumps(_review(bundle, digest, sbom, i)) for i in range(500)) + "\n")
        loadgen = _loadgen(workdir)
        port = free_port()
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(tmp, port, True), daemon=True)
        server.start()
        try:
            base = f"https://127.0.0.1:{port}"
            _wait_up(f"{base}/healthz", workdir / "ca.crt")

            def load(*flags: str) -> dict[str, Any]:
                argv = [str(loadgen), "-url", f"{base}/validate", "-ca", str(workdir / "ca.crt")]
                done = subprocess.run(
                    [*argv, "-bodies", str(bodies), *flags], capture_output=True, text=True, check=True, timeout=600
                )
                result: dict[str, Any] = json.loads(done.stdout)
                return result

            load("-conns", "16", "-requests", str(max(200, requests // 10)))  # warm-up
            closed = load("-conns", "16", "-requests", str(requests))
            rate = 2 * closed["throughput"]
            opened = load("-conns", "512", "-rate", f"{rate:.0f}", "-duration", f"{seconds}s", "-timeout", "10s")
        finally:
            server.terminate()
            server.join(10)
    return {"closed": closed, "open": opened}


def saturation_report(figures: dict[str, Any], command: str) -> str:
    closed, opened = figures["closed"], figures["open"]
    outcomes = opened["outcomes"]
    sent = opened["sent"]
    lines = [
        "## Webhook at twice its saturation rate",
        "",
        f"Command: `{command}`  ",
        "Warm `/validate` (one uvicorn worker, 4 decision threads, at most 64 decisions pending) driven by a Go load "
        "generator (tests/bench/loadgen): first closed loop with 16 connections to find its capacity, then an open "
        "loop that offers twice that arrival rate whatever the server does; the client gives up after 10 s, the "
        "webhook configuration's timeout.",
        "",
        "| run | offered/s | answered/s | admitted | shed (denied: overloaded) | timeouts | errors | p50 ms | p99 ms "
        "| max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, run in (("closed loop, saturation", closed), ("open loop, 2x saturation", opened)):
        counts = run["outcomes"]
        lines.append(
            f"| {label} | {run['offered_rate']:.0f} | {run['throughput']:.0f} | {counts.get('allowed', 0)} | "
            f"{counts.get('shed', 0)} | {counts.get('timeout', 0)} | {counts.get('error', 0)} | {run['p50_ms']:.1f} | "
            f"{run['p99_ms']:.1f} | {run['max_ms']:.1f} |"
        )
    lines += [
        "",
        f"At 2x: {sent} requests, {outcomes.get('timeout', 0)} timeouts, {outcomes.get('error', 0)} errors; the "
        f"slowest answer took {opened['max_ms']:.0f} ms (the timeout is 10,000 ms), at most "
        f"{opened['max_in_flight']} requests were in flight at the client. Past 64 pending decisions the webhook "
        "answers at once with a denial that says it is overloaded (fail closed, the caller retries) instead of "
        "letting the queue grow towards the API server's timeout.",
        "",
        "Goal: no timeouts and bounded queueing at twice the saturation rate.",
        "",
    ]
    return "\n".join(lines)


def run(requests: int, concurrency: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle, digest, sbom = _prepare(workdir)
        bodies = [json.dumps(_review(bundle, digest, sbom, i)).encode() for i in range(requests)]
        ca = workdir / "ca.crt"
        for label, cached, path in (
            ("bare FastAPI endpoint (fixed AdmissionReview)", True, "/bare"),
            ("/validate, warm verification cache", True, "/validate"),
            ("/validate, cold (every request verifies)", False, "/validate"),
        ):
            from devmlops.harness.processes import free_port

            port = free_port()
            server = multiprocessing.get_context("spawn").Process(target=_serve, args=(tmp, port, cached), daemon=True)
            server.start()
            try:
                base = f"https://127.0.0.1:{port}"
                _wait_up(f"{base}/healthz", ca)
                _load(f"{base}{path}", bodies[: max(50, requests // 10)], ca, concurrency)  # warm-up
                seconds, latencies, denials = _load(f"{base}{path}", bodies, ca, concurrency)
            finally:
                server.terminate()
                server.join(10)
            if path == "/validate" and denials:
                raise SystemExit(f"{denials} of {requests} benchmark requests were denied: the setup is wrong")
            rows.append(
                {
                    "case": label,
                    "rps": requests / seconds,
                    "p50_ms": 1000 * statistics.median(latencies),
                    "p99_ms": 1000 * _percentile(latencies, 0.99),
                    "requests": requests,
                }
            )
    return rows


def report(rows: list[dict[str, Any]], command: str, concurrency: int) -> str:
    bare = rows[0]["rps"]
    lines = [
        "## Webhook `/validate` over TLS, one uvicorn worker",
        "",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; the server in its own process, the load generator in this one, "
        f"over loopback with {concurrency} keep-alive connections.",
        "",
        "| case | decisions/s | p50 ms | p99 ms | share of bare throughput |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['rps'] / bare:.0%} |"
        )
    lines += ["", "Goal: warm p99 under 10 ms and at least half of the bare endpoint's throughput.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--overload-seconds", type=float, default=5.0, help="length of the 2x open-loop run")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.bench.report import write_section

    figures = saturation(args.requests * 2, args.overload_seconds)
    text = saturation_report(
        figures,
        f"make bench-webhook (python -m tests.bench.bench_webhook --requests {args.requests} "
        f"--overload-seconds {args.overload_seconds:g})",
    )
    print(text)
    write_section(args.output, text)
    rows = run(args.requests, args.concurrency)
    text = report(
        rows,
        f"make bench-webhook (python -m tests.bench.bench_webhook --requests {args.requests} "
        f"--concurrency {args.concurrency})",
        args.concurrency,
    )
    print(text)
    write_section(args.output, text)


if __name__ == "__main__":
    main()
