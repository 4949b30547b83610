"""Benchmark: the webhook's /validate over TLS against ceilings measured beside it, all driven by a Go load generator.

Every server runs in processes of its own; the load comes from tests/bench/loadgen (Go), whose CPU time is
reported so that it can be seen not to be what limits a server. All servers start together and the loads are
interleaved, round after round, so that each ratio compares figures taken within seconds of each other:

* ceilings: a minimal FastAPI app returning a fixed AdmissionReview on the stack the webhook ships with
  (webhook/server.py ``server_options()``), the same app on uvicorn's pure-Python asyncio + h11 (what the webhook
  ran on before), and a plain ASGI app on uvloop + httptools (the fastest stack available here);
* the webhook as it is served (``serve_workers``, the real verifier chain, metrics, one audit line per review
  written to a file): warm verification cache, cold (every review verifies), without the inline fast path (one
  thread hop per review, as before), and with two worker processes;
* the webhook's memory per worker with 1,000 ClusterModelPolicies loaded from a real API server (needs
  DEVMLOPS_TOOLS_DIR; skipped without it), and the webhook at twice its saturation rate (open loop).

Run with `make bench-webhook`; the sections are written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request

ROOT = Path(__file__).resolve().parents[2]
FIXED = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"bench","allowed":true}}'
UNIQUE = "UNIQUEUNIQUE"  # the load generator replaces it with a 12-digit sequence number in every request
SETTLE = 16.0  # seconds idle before a resident size is read: the workers trim freed heap every 15 s


# --- the AdmissionReview -----------------------------------------------------------------------------------------


def _review(bundle: str, digest: str, sbom: str, *, object_uid: str) -> dict[str, Any]:
    """A ModelDeployment CREATE as the API server sends it after `kubectl apply`: the object carries its uid (the
    API server sets it before validating admission), the last-applied-configuration annotation (the manifest again,
    bundle and SBOM included) and managedFields; the request carries resource, requestKind, userInfo with groups and
    extra, and CreateOptions (about 6.5 KB)."""
    spec = {
        "model": {"name": "fraud", "uri": "s3://models/fraud", "format": "sklearn", "digest": digest},
        "runtime": {"kind": "kserve"},
        "signature": {"inline": bundle},
        "sbom": {"document": {"inline": sbom}},
    }
    manifest = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"annotations": {}, "labels": {"devmlops.io/eu-ai-act-risk": "limited"}, "name": "fraud"},
        "spec": spec,
    }
    fields = {
        "f:metadata": {
            "f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
            "f:labels": {".": {}, "f:devmlops.io/eu-ai-act-risk": {}},
        },
        "f:spec": {
            ".": {},
            "f:model": {".": {}, "f:digest": {}, "f:format": {}, "f:name": {}, "f:uri": {}},
            "f:runtime": {".": {}, "f:kind": {}},
            "f:sbom": {".": {}, "f:document": {".": {}, "f:inline": {}}},
            "f:signature": {".": {}, "f:inline": {}},
        },
    }
    gvk = {"group": "devmlops.io", "version": "v1alpha1", "kind": "ModelDeployment"}
    gvr = {"group": "devmlops.io", "version": "v1alpha1", "resource": "modeldeployments"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"6f1c2a9e-4b7d-4f0e-9a51-{UNIQUE}",
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": "fraud",
            "namespace": "bench",
            "operation": "CREATE",
            "userInfo": {
                "username": "bench",
                "uid": "2d9a3c1e-8f4b-4a6d-b1e7-5c0f9e8d7a6b",
                "groups": ["team-fraud", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=" + "ab" * 32]},
            },
            "object": {
                "apiVersion": "devmlops.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {
                    "name": "fraud",
                    "namespace": "bench",
                    "uid": f"9e8d7c6b-5a4f-4e3d-8c2b-{object_uid}",
                    "generation": 1,
                    "creationTimestamp": "2026-12-01T09:30:00Z",
                    "labels": {"devmlops.io/eu-ai-act-risk": "limited"},
                    "annotations": {
                        "devmlops.io/requested-by": "bench",
                        "devmlops.io/requester-groups": '["system:authenticated","team-fraud"]',
                        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(manifest) + "\n",
                    },
                    "managedFields": [
                        {
                            "manager": "kubectl-client-side-apply",
                            "operation": "Update",
                            "apiVersion": "devmlops.io/v1alpha1",
                            "time": "2026-12-01T09:30:00Z",
                            "fieldsType": "FieldsV1",
                            "fieldsV1": fields,
                        }
                    ],
                },
                "spec": spec,
            },
            "oldObject": None,
            "dryRun": False,
            "options": {
                "kind": "CreateOptions",
                "apiVersion": "meta.k8s.io/v1",
                "fieldManager": "kubectl-client-side-apply",
                "fieldValidation": "Strict",
            },
        },
    }


def _prepare(workdir: Path) -> tuple[str, str, str]:
    """TLS files, a signed model and its SBOM; returns (bundle, digest, sbom)."""
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


def _bench_policy(workdir: Path) -> dict[str, Any]:
    return {
        "metadata": {"name": "bench", "resourceVersion": "1"},
        "spec": {
            "authorities": [{"name": "release", "key": {"publicKey": (workdir / "signer.pub").read_text()}}],
            "sbom": {"required": True},
            "allow": {"storageUris": ["s3://models/**"]},
        },
    }


# --- the servers (each function runs in a spawned process) ----------------------------------------------------------


def bench_deps(workdir: str, cached: bool, inline: bool) -> Any:
    """One webhook worker's dependencies, wired as webhook/main.py wires them (verification cache over the inline
    guard over the deadline over the timed verifier), with the cluster replaced by an empty one: every document is
    inline in the review. Audit lines go to a file, as they would go to stdout."""
    import logging

    from devmlops.adapters.oms import OmsVerifier
    from devmlops.adapters.verifycache import CachingVerifier
    from devmlops.core.policy import PolicySet, compile_policy
    from devmlops.webhook.app import WebhookDeps
    from devmlops.webhook.main import guarded_verifier, lean_log_records
    from devmlops.webhook.metrics import WebhookMetrics
    from devmlops.webhook.service import AdmissionService, TimedVerifier
    from tests.support.lookups import EmptyCluster

    folder = Path(workdir)
    logging.basicConfig(filename=folder / "audit.log", level=logging.INFO, format="%(message)s")
    logging.getLogger("devmlops.webhook.tls").setLevel(logging.WARNING)
    lean_log_records()
    policies = PolicySet((compile_policy(_bench_policy(folder)),))
    metrics = WebhookMetrics.create()
    guarded = guarded_verifier(TimedVerifier(OmsVerifier(), metrics), seconds=3.0)
    verifier: Any = CachingVerifier(guarded) if cached else guarded
    service = AdmissionService(policies=lambda: policies, lookup=EmptyCluster(), verifier=verifier)
    return WebhookDeps(decide=service.decide, metrics=metrics, inline_decisions=inline)


def _webhook_server(workdir: str, port: int, cached: bool, inline: bool, workers: int) -> None:
    from devmlops.webhook.server import serve_workers
    from devmlops.webhook.settings import WebhookSettings

    folder = Path(workdir)
    settings = WebhookSettings(
        host="127.0.0.1", port=port, tls_cert=folder / "tls.crt", tls_key=folder / "tls.key", workers=workers
    )
    serve_workers(settings, functools.partial(bench_deps, workdir, cached, inline))


def _ceiling_server(workdir: str, port: int, kind: str) -> None:
    """One process of a ceiling app: ``fastapi`` (the shipped stack), ``fastapi-h11`` (asyncio + h11) or ``asgi``
    (a plain ASGI app on uvloop + httptools). Each reads the body, as any admission handler must, and answers with
    a fixed AdmissionReview. Bound with SO_REUSEPORT, so that two processes can share the port."""
    import uvicorn
    from fastapi import FastAPI, Response

    from devmlops.webhook.server import listen, server_options

    options = server_options()
    if kind == "fastapi-h11":
        options.update(loop="asyncio", http="h11")
    app: Any
    if kind == "asgi":
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(FIXED))]

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": FIXED})

    else:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/validate")
        async def validate(request: Request) -> Response:
            await request.body()
            return Response(FIXED, media_type="application/json")

    folder = Path(workdir)
    config = uvicorn.Config(
        app, ssl_certfile=str(folder / "tls.crt"), ssl_keyfile=str(folder / "tls.key"), lifespan="off", **options
    )
    uvicorn.Server(config).run(sockets=[listen("127.0.0.1", port, reuse_port=True)])


@dataclass
class Server:
    name: str
    port: int
    processes: list[Any]

    def pids(self) -> list[int]:
        """Every process serving the port: the started ones and the workers they started."""
        return [pid for process in self.processes for pid in serving_pids(process.pid)]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(20)
            if process.is_alive():
                process.kill()


def _start(name: str, target: Any, args: tuple[Any, ...], copies: int = 1) -> Server:
    from devmlops.harness.processes import free_port

    port = free_port()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=(*args[:1], port, *args[1:]), daemon=False) for _ in range(copies)]
    for process in processes:
        process.start()
    return Server(name, port, processes)


def _wait_up(port: int, ca: Path, body: bytes) -> None:
    """Until /validate answers with 200."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            context = ssl.create_default_context(cafile=str(ca))
            answer = httpx.post(f"https://127.0.0.1:{port}/validate", content=body, verify=context, timeout=5)
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not come up")


def serving_pids(pid: int) -> list[int]:
    """``pid`` and the worker processes any of its threads started (not multiprocessing's resource tracker)."""
    found = [pid]
    for child in [c for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()]:
        try:
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the load ------------------------------------------------------------------------------------------------------


def build_loadgen(workdir: Path) -> Path:
    """Build the Go load generator (standard library only) into ``workdir``."""
    binary = workdir / "loadgen"
    subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=Path(__file__).parent / "loadgen",
        check=True,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
    )
    return binary


def _load(loadgen: Path, workdir: Path, port: int, *flags: str, bodies: str = "distinct") -> dict[str, Any]:
    """``bodies``: "distinct" (every review a new object, as CREATEs are) or "repeat" (one object reviewed again
    and again; only the request uid changes)."""
    argv = [str(loadgen), "-url", f"https://127.0.0.1:{port}/validate", "-ca", str(workdir / "ca.crt")]
    argv += ["-bodies", str(workdir / f"{bodies}.jsonl"), "-unique", UNIQUE]
    done = subprocess.run([*argv, *flags], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"loadgen failed: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@contextmanager
def _workdir() -> Iterator[tuple[Path, bytes]]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle, digest, sbom = _prepare(workdir)
        distinct = json.dumps(_review(bundle, digest, sbom, object_uid=UNIQUE), separators=(",", ":"))
        repeat = json.dumps(_review(bundle, digest, sbom, object_uid="000000000001"), separators=(",", ":"))
        (workdir / "distinct.jsonl").write_text(distinct + "\n")
        (workdir / "repeat.jsonl").write_text(repeat + "\n")
        yield workdir, repeat.encode()


# --- ceilings, webhook, workers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    kind: str  # "webhook" or "ceiling"
    args: tuple[Any, ...]  # after workdir and port: see _webhook_server and _ceiling_server
    processes: int = 1
    bodies: str = "distinct"


CASES = (
    Case("ceiling", "ceiling: minimal FastAPI app, shipped stack (uvloop, httptools)", "ceiling", ("fastapi",)),
    Case("fastest", "ceiling: plain ASGI app, uvloop + httptools (fastest here)", "ceiling", ("asgi",)),
    Case("h11", "reference: minimal FastAPI app, asyncio + h11 (the stack before)", "ceiling", ("fastapi-h11",)),
    Case("warm", "webhook, warm verification cache, every review a new object", "webhook", (True, True, 1)),
    Case("hop", "webhook, warm, new objects, every decision in the pool (no inline path)", "webhook", (True, False, 1)),
    Case("cold", "webhook, cold: every review verifies its signature", "webhook", (False, True, 1)),
    Case("warm2", "webhook, warm, new objects, 2 worker processes", "webhook", (True, True, 2)),
    Case("ceiling2", "ceiling: minimal FastAPI app, shipped stack, 2 processes", "ceiling", ("fastapi",), processes=2),
)


def compare(loadgen: Path, workdir: Path, first: bytes, *, rounds: int, seconds: float, levels: list[int]) -> Any:
    """Every case at every connection count, ``rounds`` times, in an order that rotates from round to round."""
    servers: dict[str, Server] = {}
    try:
        for case in CASES:
            target = _webhook_server if case.kind == "webhook" else _ceiling_server
            servers[case.key] = _start(case.key, target, (str(workdir), *case.args), case.processes)
        for key, server in servers.items():
            _wait_up(server.port, workdir / "ca.crt", first)
            if key == "warm2":  # wait until both workers serve (the second binds once it is ready)
                deadline = time.monotonic() + 60
                while len(server.pids()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(2)
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        keys = [case.key for case in CASES]
        bodies = {case.key: case.bodies for case in CASES}
        for round_ in range(rounds):
            order = keys[round_ % len(keys) :] + keys[: round_ % len(keys)]
            for conns in levels:
                for key in order:
                    pids = servers[key].pids()
                    cpu_before = sum(cpu_seconds(pid) for pid in pids)
                    result = _load(
                        loadgen,
                        workdir,
                        servers[key].port,
                        "-conns",
                        str(conns),
                        "-requests",
                        "0",
                        "-duration",
                        f"{seconds}s",
                        "-warmup",
                        str(conns * 20),
                        bodies=bodies[key],
                    )
                    spent = sum(cpu_seconds(pid) for pid in pids) - cpu_before
                    result["server_us"] = 1e6 * spent / (result["sent"] + conns * 20)  # the warm-up is in there
                    if result["outcomes"].get("allowed", 0) != result["sent"]:
                        raise SystemExit(f"{key}: not every review was admitted: {result['outcomes']}")
                    runs.setdefault((key, conns), []).append(result)
                    print(
                        f"round {round_ + 1} {key:9} c={conns:3} {result['throughput']:8.0f}/s "
                        f"p99 {result['p99_ms']:6.2f} ms server {result['server_us']:5.0f} us/review "
                        f"client {result['cpu_seconds'] / result['seconds']:.2f} cores",
                        flush=True,
                    )
        memory = {key: [rss_mib(pid) for pid in servers[key].pids()] for key in ("warm", "warm2", "ceiling")}
        audit_lines = sum(1 for _ in (workdir / "audit.log").open()) if (workdir / "audit.log").exists() else 0
    finally:
        for server in servers.values():
            server.stop()
    return runs, memory, audit_lines


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def compare_report(
    runs: dict[tuple[str, int], list[dict[str, Any]]],
    memory: dict[str, list[float]],
    audit_lines: int,
    *,
    command: str,
    levels: list[int],
    rounds: int,
    seconds: float,
    body_bytes: int,
) -> tuple[str, dict[str, Any]]:
    labels = {case.key: case.label for case in CASES}
    lines = [
        "## Webhook `/validate` over TLS against its ceilings",
        "",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; other work was running on the machine. Every server ran in its own "
        f"process(es) at the same time; the load came from the Go load generator (tests/bench/loadgen), closed loop, "
        f"keep-alive connections, {seconds:g} s per run after a warm-up on the same connections, {body_bytes:,}-byte "
        f"AdmissionReviews (a ModelDeployment CREATE as the API server sends it after `kubectl apply`). Runs were "
        f"interleaved over {rounds} rounds; each figure is the median of the rounds, and each ratio is taken within a "
        "round and then given as median (min-max over the rounds).",
        "",
    ]
    goals: dict[str, Any] = {}
    for conns in levels:

        def series(key: str, field: str, conns: int = conns) -> list[float]:
            return [run[field] for run in runs[(key, conns)]]

        def ratio(key: str, base: str, field: str = "throughput", conns: int = conns) -> list[float]:
            return [a / b for a, b in zip(series(key, field, conns), series(base, field, conns), strict=True)]

        lines += [
            f"{conns} connections:",
            "",
            "| server | reviews/s | p50 ms | p99 ms | x ceiling (same stack) | x fastest | p99 x ceiling's | "
            "server CPU µs/review | client cores |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in labels:
            rps = _median(series(key, "throughput"))
            to_ceiling, to_fastest = ratio(key, "ceiling"), ratio(key, "fastest")
            p99 = ratio(key, "ceiling", "p99_ms")
            client = [r["cpu_seconds"] / r["seconds"] for r in runs[(key, conns)]]
            lines.append(
                f"| {labels[key]} | {rps:,.0f} | {_median(series(key, 'p50_ms')):.2f} | "
                f"{_median(series(key, 'p99_ms')):.2f} | {_median(to_ceiling):.2f} ({_spread(to_ceiling)}) | "
                f"{_median(to_fastest):.2f} ({_spread(to_fastest)}) | {_median(p99):.2f} ({_spread(p99)}) | "
                f"{_median(series(key, 'server_us')):.0f} | {_median(client):.2f} |"
            )
        goals[f"warm_{conns}"] = (ratio("warm", "ceiling"), ratio("warm", "ceiling", "p99_ms"))
        goals[f"cold_{conns}"] = ratio("cold", "ceiling")
        goals[f"fastest_{conns}"] = ratio("warm", "fastest")
        goals[f"workers_{conns}"] = (ratio("warm2", "warm"), ratio("ceiling2", "ceiling"))
        lines.append("")
    top = max(levels)
    warm, warm_p99 = goals[f"warm_{top}"]
    scaling, ceiling_scaling = goals[f"workers_{top}"]
    worker_rss = memory["warm2"]
    lines += [
        "The client is not what limits the webhook rows: the same load generator, with the same connections, drove the "
        "plain ASGI app at the rate in its row, well above any webhook row, using the CPU shown (in cores). Server "
        "CPU per review (user + system time of the server's processes, warm-up included) is the steadiest figure "
        "on a shared machine: it does not depend on how much CPU the other work left.",
        "",
        f"Goals at {top} connections (ratios within a round, median and range over {rounds} rounds):",
        "",
        "| goal | measured | met |",
        "|---|---:|---|",
        f"| warm /validate >= 0.8x the plain ceiling on the same stack | {_median(warm):.2f} ({_spread(warm)}) | "
        f"{_met(_median(warm) >= 0.8)} |",
        f"| warm p99 <= 1.5x the ceiling's p99 | {_median(warm_p99):.2f} ({_spread(warm_p99)}) | "
        f"{_met(_median(warm_p99) <= 1.5)} |",
        f"| cold >= 0.5x the ceiling | {_median(goals[f'cold_{top}']):.2f} ({_spread(goals[f'cold_{top}'])}) | "
        f"{_met(_median(goals[f'cold_{top}']) >= 0.5)} |",
        f"| two workers >= 1.8x one worker | {_median(scaling):.2f} ({_spread(scaling)}) | "
        f"{_met(_median(scaling) >= 1.8)} |",
        "",
        f"Against the fastest stack (a plain ASGI app) the warm webhook serves "
        f"{_median(goals[f'fastest_{top}']):.2f}x ({_spread(goals[f'fastest_{top}'])}). Two processes of the "
        f"minimal FastAPI ceiling reach {_median(ceiling_scaling):.2f}x ({_spread(ceiling_scaling)}) of one on the "
        "same two cores while the load generator takes its share: what two webhook workers can reach here is bounded "
        "by that.",
        "",
        "Resident memory after the runs (1 policy): webhook, one worker "
        f"{', '.join(f'{m:.0f}' for m in memory['warm'])} MiB; two workers "
        f"{' + '.join(f'{m:.0f}' for m in worker_rss)} MiB; minimal FastAPI ceiling "
        f"{', '.join(f'{m:.0f}' for m in memory['ceiling'])} MiB. {audit_lines:,} audit lines were written.",
        "",
    ]
    return "\n".join(lines), goals


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


# --- memory per worker with 1,000 policies (real API server) --------------------------------------------------------


def memory_with_policies(loadgen: Path, workdir: Path, *, policies: int, workers: int) -> dict[str, Any] | None:
    tools = os.environ.get("DEVMLOPS_TOOLS_DIR")
    if not tools:
        print("DEVMLOPS_TOOLS_DIR is not set: memory with policies skipped", flush=True)
        return None
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes import client as k8s

    from devmlops.adapters.kube import api_client
    from devmlops.harness.controlplane import ControlPlane, find_tools
    from devmlops.harness.processes import ManagedProcess, free_port
    from tests.integration.support import cluster_policy

    pem = (workdir / "signer.pub").read_text()
    with ControlPlane(bin_dir=find_tools(Path(tools)), crd_paths=[ROOT / "crds"], controller_manager=False) as cp:
        with api_client(cp.kubeconfig()) as admin:
            k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": "bench"}})
            bench = cluster_policy("bench", "bench", pem, sbom={"required": True}, allow={"storageUris": ["s3://**"]})
            k8s.CustomObjectsApi(admin).create_cluster_custom_object(
                "devmlops.io", "v1alpha1", "clustermodelpolicies", bench
            )

        def create(index: int) -> None:
            team = f"team-{index:04d}"
            body = cluster_policy(f"policy-{team}", team, pem, allow={"storageUris": [f"s3://{team}/**"]})
            with api_client(cp.kubeconfig()) as client:
                k8s.CustomObjectsApi(client).create_cluster_custom_object(
                    "devmlops.io", "v1alpha1", "clustermodelpolicies", body
                )

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(policies)))
        created = time.monotonic() - started
        port = free_port()
        argv = [sys.executable, "-m", "devmlops", "webhook", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--tls-cert", str(workdir / "tls.crt"), "--tls-key", str(workdir / "tls.key")]
        argv += ["--workers", str(workers)]
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig()), "PYTHONUNBUFFERED": "1"}
        webhook = ManagedProcess("webhook", argv, log_path=workdir / "webhook.log", env=env).start()
        try:
            deadline = time.monotonic() + 180
            seen: dict[int, int] = {}
            while time.monotonic() < deadline and not (
                len(seen) >= workers and all(n >= policies + 1 for n in seen.values())
            ):
                webhook.ensure_running()
                try:
                    context = ssl.create_default_context(cafile=str(workdir / "ca.crt"))
                    status = httpx.get(f"https://127.0.0.1:{port}/readyz", verify=context, timeout=5)
                    document = status.json()
                    seen[int(document["pid"])] = int(document["policies"])
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                time.sleep(0.2)
            if len(seen) < workers:
                raise SystemExit(f"only {len(seen)} of {workers} workers answered: {seen}")
            loaded = time.monotonic() - started
            time.sleep(SETTLE)
            assert webhook.pid is not None
            before = [rss_mib(pid) for pid in serving_pids(webhook.pid)]
            # Decisions through every worker (reviews with a signature and an SBOM), then the settle time.
            outcomes = _load(loadgen, workdir, port, "-conns", "16", "-requests", "4000")["outcomes"]
            time.sleep(SETTLE)
            pids = serving_pids(webhook.pid)
            rss = [rss_mib(pid) for pid in pids]
            peak = [rss_mib(pid, "VmHWM") for pid in pids]
            others = [
                rss_mib(int(child))
                for task in Path(f"/proc/{webhook.pid}/task").glob("*/children")
                for child in task.read_text().split()
                if int(child) not in pids
            ]
        finally:
            webhook.stop()
    return {
        "policies": policies,
        "workers": workers,
        "created": created,
        "loaded": loaded,
        "rss": rss,
        "peak": peak,
        "before": before,
        "others": others,
        "outcomes": outcomes,
    }


def memory_report(result: dict[str, Any] | None, command: str) -> str:
    lines = ["## Webhook memory per worker with 1,000 policies", "", f"Command: `{command}`  "]
    if result is None:
        return "\n".join([*lines, "", "Skipped: DEVMLOPS_TOOLS_DIR was not set (the run needs a real API server).", ""])
    rss, peak = result["rss"], result["peak"]
    lines += [
        f"`devmlops webhook --workers {result['workers']}` against a real kube-apiserver holding "
        f"{result['policies'] + 1:,} ClusterModelPolicies (each worker lists and watches them itself); RSS read "
        f"{SETTLE:.0f} s after the policies were compiled, and again {SETTLE:.0f} s after 4,000 reviews (signature and "
        "CycloneDX SBOM, straight to the workers: "
        f"{', '.join(f'{n:,} {outcome}' for outcome, n in sorted(result['outcomes'].items()))}).",
        "",
        "| worker | RSS MiB, policies loaded | RSS MiB, after the reviews | peak MiB |",
        "|---|---:|---:|---:|",
    ]
    for index, (first, now, high) in enumerate(zip(result["before"], rss, peak, strict=True)):
        lines.append(f"| {index} | {first:.0f} | {now:.0f} | {high:.0f} |")
    lines += [
        "",
        f"Besides the workers the pod runs multiprocessing's resource tracker "
        f"({' + '.join(f'{m:.0f}' for m in result['others']) or '0'} MiB). "
        f"Policies created in {result['created']:.1f} s; every worker had compiled all of them "
        f"{result['loaded']:.1f} s after the first create. Goal: at most 150 MiB per worker: "
        f"{_met(max(rss) <= 150)} (largest {max(rss):.0f} MiB).",
        "",
    ]
    return "\n".join(lines)


# --- twice the saturation rate --------------------------------------------------------------------------------------


def saturation(loadgen: Path, workdir: Path, first: bytes, seconds: float) -> dict[str, Any]:
    """Warm /validate: its capacity (closed loop, 16 connections), then an open-loop arrival rate of twice that."""
    server = _start("warm", _webhook_server, (str(workdir), True, True, 1))
    try:
        _wait_up(server.port, workdir / "ca.crt", first)
        closed = _load(
            loadgen, workdir, server.port, "-conns", "16", "-requests", "0", "-duration", "5s", "-warmup", "400"
        )
        rate = 2 * closed["throughput"]
        flags = ("-conns", "512", "-rate", f"{rate:.0f}", "-duration", f"{seconds}s", "-timeout", "10s")
        opened = _load(loadgen, workdir, server.port, *flags)
    finally:
        server.stop()
    return {"closed": closed, "open": opened}


def saturation_report(figures: dict[str, Any], command: str) -> str:
    closed, opened = figures["closed"], figures["open"]
    outcomes = opened["outcomes"]
    lines = [
        "## Webhook at twice its saturation rate",
        "",
        f"Command: `{command}`  ",
        "Warm `/validate` (one worker, 8 decision threads, at most 64 reviews pending) driven by the Go load "
        "generator: first closed loop with 16 connections to find its capacity, then an open loop that offers twice "
        "that arrival rate whatever the server does (up to 512 connections); the client gives up after 10 s, the "
        "webhook configuration's timeout. Latency is measured from the scheduled arrival, so it includes the wait "
        "for a free connection at the client.",
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
        f"At 2x: {opened['sent']} requests, {outcomes.get('timeout', 0)} timeouts, {outcomes.get('error', 0)} errors; "
        f"the slowest answer took {opened['max_ms']:.0f} ms (the timeout is 10,000 ms), at most "
        f"{opened['max_in_flight']} requests were in flight at the client. A review parsed while 64 others wait for "
        "the event loop or the decision pool is answered at once with a denial that says the webhook is overloaded "
        "(fail closed, the caller retries) instead of waiting towards the API server's timeout.",
        "",
        "Goal: no timeouts and bounded queueing at twice the saturation rate.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one closed-loop run")
    parser.add_argument("--connections", default="4,16", help="comma-separated connection counts")
    parser.add_argument("--policies", type=int, default=1000, help="ClusterModelPolicies for the memory run")
    parser.add_argument("--overload-seconds", type=float, default=5.0, help="length of the 2x open-loop run")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: compare, memory, overload")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.bench.report import write_section

    skip = set(filter(None, args.skip.split(",")))
    levels = [int(c) for c in args.connections.split(",")]
    command = (
        f"make bench-webhook (python -m tests.bench.bench_webhook --rounds {args.rounds} --seconds {args.seconds:g} "
        f"--connections {args.connections} --policies {args.policies} --overload-seconds {args.overload_seconds:g})"
    )
    with _workdir() as (workdir, first), tempfile.TemporaryDirectory() as build:
        loadgen = build_loadgen(Path(build))
        if "compare" not in skip:
            runs, memory, audit_lines = compare(
                loadgen, workdir, first, rounds=args.rounds, seconds=args.seconds, levels=levels
            )
            text, _goals = compare_report(
                runs,
                memory,
                audit_lines,
                command=command,
                levels=levels,
                rounds=args.rounds,
                seconds=args.seconds,
                body_bytes=len(first),
            )
            print(text)
            write_section(args.output, text)
        if "memory" not in skip:
            result = memory_with_policies(loadgen, workdir, policies=args.policies, workers=2)
            text = memory_report(result, command)
            print(text)
            if result is not None:  # without an API server the last measured section stays
                write_section(args.output, text)
        if "overload" not in skip:
            text = saturation_report(saturation(loadgen, workdir, first, args.overload_seconds), command)
            print(text)
            write_section(args.output, text)


if __name__ == "__main__":
    main()
