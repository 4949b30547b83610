"""Benchmark: the latency the serving guard adds in front of a real model server, side by side in one run.

MLServer (the v2 server KServe's sklearn runtime runs, from PyPI, a scikit-learn model on iris) is called directly
and through `devmlops guard` (v2 schema, size limit and a per-client rate limit that does not bind), both at a fixed
arrival rate from the Go load generator (open loop), in interleaved rounds. The guard is one process with one event
loop: it runs on one core. Beside it, the guard's upstream client (guard/upstream.py) against aiohttp's, the client
it replaced: CPU a request in this process against a server that answers at once. Run with `make bench-guard`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IRIS = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}]}
CONFIG = {
    "protocol": "v2",
    "maxRequestBytes": 65536,
    "perClient": {"requestsPerSecond": 1_000_000, "burst": 1_000_000},
}


# A server that answers every request at once with one small v2 answer: the upstream of the client comparison, in a
# process of its own so that its CPU is not counted.
_FIXED_SERVER = """
import asyncio, sys
BODY = b'{"model_name":"iris","outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","data":[0]}]}'
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n"
ANSWER = HEAD % len(BODY) + BODY
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = [int(l.split(b":")[1]) for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length")]
            await reader.readexactly(length[0] if length else 0)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def client_cpu(requests: int, rounds: int) -> dict[str, list[float]]:
    """CPU µs a request of the guard's upstream client and of aiohttp's, ``requests`` sequential requests a round,
    the two interleaved, against ``_FIXED_SERVER`` in its own process."""
    import aiohttp

    from devmlops.guard.upstream import UpstreamClient
    from devmlops.harness.processes import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _FIXED_SERVER, str(port)])
    body = json.dumps(IRIS).encode()
    headers = [("Content-Type", "application/json"), ("Accept", "*/*"), ("Accept-Encoding", "identity")]

    async def run() -> dict[str, list[float]]:
        lean = UpstreamClient(f"http://127.0.0.1:{port}")
        session = aiohttp.ClientSession(auto_decompress=False)
        url = f"http://127.0.0.1:{port}/v2/models/iris/infer"

        async def devmlops() -> bytes:
            async with lean.request("POST", "/v2/models/iris/infer", headers, body) as answer:
                return await answer.read(1 << 20)

        async def with_aiohttp() -> bytes:
            async with session.request("POST", url, data=body, headers=headers, allow_redirects=False) as answer:
                return await answer.content.read(1 << 20)

        cpu: dict[str, list[float]] = {"devmlops": [], "aiohttp": []}
        try:
            for _ in range(rounds + 1):  # the first round warms both up and is not counted
                for name, call in (("devmlops", devmlops), ("aiohttp", with_aiohttp)):
                    started = time.process_time()
                    for _ in range(requests):
                        assert (await call()).startswith(b'{"model_name"')
                    cpu[name].append(1e6 * (time.process_time() - started) / requests)
        finally:
            lean.close()
            await session.close()
        return {name: values[1:] for name, values in cpu.items()}

    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the fixed-answer server did not start")
            time.sleep(0.1)
        return asyncio.run(run())
    finally:
        server.kill()
        server.wait()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _load(loadgen: Path, url: str, bodies: Path, *flags: str) -> dict[str, Any]:
    argv = [str(loadgen), "-url", url, "-bodies", str(bodies), "-plain", *flags]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"loadgen failed: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second offered")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client-requests", type=int, default=3000, help="requests a round of the client comparison")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from devmlops.harness.processes import ManagedProcess, free_port
    from tests.bench.bench_webhook import build_loadgen, cpu_seconds, rss_mib
    from tests.bench.report import write_section
    from tests.support.modelservers import mlserver

    with tempfile.TemporaryDirectory() as tmp, mlserver(Path(tmp)) as upstream:
        work = Path(tmp)
        loadgen = build_loadgen(work)
        bodies = work / "iris.jsonl"
        bodies.write_text(json.dumps(IRIS) + "\n")
        port, metrics = free_port(), free_port()
        argv = [sys.executable, "-m", "devmlops", "guard", f"--upstream={upstream}", f"--listen=127.0.0.1:{port}"]
        argv += [f"--metrics-listen=127.0.0.1:{metrics}", "--model=iris", "--config=" + json.dumps(CONFIG)]
        guard = ManagedProcess("guard", argv, log_path=work / "guard.log", env=dict(os.environ)).start()
        try:
            guarded = f"http://127.0.0.1:{port}/v2/models/iris/infer"
            direct = f"{upstream}/v2/models/iris/infer"
            time.sleep(2.0)
            guard.ensure_running()
            for url in (direct, guarded):  # warm both paths (connections, first inference)
                _load(loadgen, url, bodies, "-conns", "8", "-requests", "500")
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "guarded": []}
            guard_cpu: list[float] = []
            for round_number in range(args.rounds):
                for name, url in (("direct", direct), ("guarded", guarded)):
                    before = cpu_seconds(guard.pid or 0)
                    flags = ("-rate", f"{args.rate:g}", "-duration", f"{args.seconds:g}s", "-conns", "64")
                    result = _load(loadgen, url, bodies, *flags)
                    if name == "guarded":
                        guard_cpu.append(1e6 * (cpu_seconds(guard.pid or 0) - before) / max(result["sent"], 1))
                    runs[name].append(result)
                    print(f"round {round_number + 1} {name:8} {result['throughput']:7.0f}/s "
                          f"p50 {result['p50_ms']:6.2f} p99 {result['p99_ms']:6.2f} ms "
                          f"{result['outcomes']}", flush=True)  # fmt: skip
            rss = rss_mib(guard.pid or 0)
        finally:
            guard.stop()
    clients = client_cpu(args.client_requests, args.rounds)
    print(f"upstream client CPU µs a request: {clients}", flush=True)
    text = report(runs, guard_cpu, rss, args, clients)
    print(text)
    write_section(args.output, text)


def report(
    runs: dict[str, list[dict[str, Any]]],
    guard_cpu: list[float],
    rss: float,
    args: Any,
    clients: dict[str, list[float]],
) -> str:
    def added(field: str) -> list[float]:
        return [g[field] - d[field] for d, g in zip(runs["direct"], runs["guarded"], strict=True)]

    def errors(name: str) -> int:
        return sum(n for run in runs[name] for outcome, n in run["outcomes"].items() if outcome != "ok")

    p50, p99 = added("p50_ms"), added("p99_ms")
    ratios = [a / d for d, a in zip(clients["devmlops"], clients["aiohttp"], strict=True)]
    rows = [
        f"| {name} | {median(r['throughput'] for r in runs[name]):,.0f} | {median(r['p50_ms'] for r in runs[name]):.2f}"
        f" | {median(r['p99_ms'] for r in runs[name]):.2f} | {errors(name)} |"
        for name in ("direct", "guarded")
    ]
    command = (
        f"`make bench-guard` (python -m tests.bench.bench_guard --rate {args.rate:g} --seconds {args.seconds:g} "
        f"--rounds {args.rounds})"
    )
    return "\n".join(
        [
            "## Serving guard: latency added in front of a model server",
            "",
            f"Command: {command}  ",
            "MLServer 1.7.1 serving a scikit-learn model (v2 protocol), called directly and through `devmlops guard` "
            "(v2 schema, size limit, a per-client rate limit that does not bind), at a fixed arrival rate from the "
            f"Go load generator (open loop, {args.seconds:g} s a run), {args.rounds} interleaved rounds; medians.",
            "",
            "| path | answered/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "| figure | value | goal | met |",
            "|---|---:|---:|---|",
            f"| p50 added (min-max over rounds) | {median(p50):.2f} ms ({min(p50):.2f}-{max(p50):.2f}) | < 1 ms | "
            f"{_met_delta(median(p50), 1)} |",
            f"| p99 added (min-max over rounds) | {median(p99):.2f} ms ({min(p99):.2f}-{max(p99):.2f}) | < 3 ms | "
            f"{_met_delta(median(p99), 3)} |",
            f"| guard CPU per request | {median(guard_cpu):.0f} µs | | |",
            f"| guard RSS after the runs | {rss:.0f} MiB | < 80 MiB | {'yes' if rss < 80 else '**no**'} |",
            "",
            f"The guard's upstream client (guard/upstream.py) against aiohttp's, which the guard used before: CPU a "
            f"request in one process, {args.client_requests:,} sequential requests a round to a server in another "
            f"process that answers at once, the two interleaved over {args.rounds} rounds; medians.",
            "",
            "| client | CPU µs a request | aiohttp's / this (min-max over rounds) |",
            "|---|---:|---:|",
            f"| guard/upstream.py | {median(clients['devmlops']):.0f} | {median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |",
            f"| aiohttp {_aiohttp_version()} | {median(clients['aiohttp']):.0f} | 1.00 |",
            "",
        ]
    )


def _aiohttp_version() -> str:
    from importlib.metadata import version

    return version("aiohttp")


def _met_delta(added: float, goal: float) -> str:
    """A difference of two noisy percentiles: below zero it says nothing about the guard, only about the noise."""
    if added < 0:
        return "no reading (the direct path's figure was the larger)"
    return "yes" if added < goal else "**no**"


if __name__ == "__main__":
    main()
