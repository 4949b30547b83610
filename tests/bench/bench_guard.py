"""Benchmark: the latency the serving guard adds in front of a model server, side by side in one run.

Each upstream is called directly and through `devmlops guard`, at a fixed arrival rate from the Go load generator
(open loop), the paths interleaved round after round:

* a fixed-answer server (a process of its own that answers every request at once): the model server that keeps up
  with the goal's 1,000 requests/s, once with the v2 protocol (schema, size limit, a per-client rate limit that does
  not bind) and once as an OpenAI-compatible chat endpoint with every prompt and answer check on;
* MLServer (the v2 server KServe's sklearn runtime runs, from PyPI, a scikit-learn model on iris), at the rate it
  sustains on this machine (``--mlserver-rate``).

The guard is one process with one event loop. With two cores or more it is pinned to one core of its own and
everything else (upstreams, load generator, this script) to the others, so "on one core" holds literally. Beside
it, the guard's upstream client (guard/upstream.py) against aiohttp's, the client it replaced: CPU a request in this
process against a server that answers at once; and the guard's server (guard/server.py) against aiohttp's, the
server it replaced: CPU a request of a process that serves one fixed answer each way, at the same fixed rate. Run
with `make bench-guard`."""

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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
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
CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "You are a botanist. Answer in one sentence."},
        {"role": "user", "content": "Which iris has sepals 5.1 cm by 3.5 cm and petals 1.4 cm by 0.2 cm?"},
    ],
}
CHAT_CONFIG = {
    "protocol": "openai",
    "maxRequestBytes": 65536,
    "perClient": {"requestsPerSecond": 1_000_000, "burst": 1_000_000},
    "input": {"injection": True, "secrets": True, "pii": True},
    "output": {"secrets": True, "pii": True},
}


# A server that answers every request at once, in a process of its own so that its CPU is not counted: one small
# chat completion at /v1/chat/completions, one small v2 answer at any other path.
_FIXED_SERVER = """
import asyncio, sys
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n"
V2 = b'{"model_name":"iris","outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","data":[0]}]}'
CHAT = (b'{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
        b'"content":"That is Iris setosa, the smallest-petalled of the three."}}]}')
ANSWERS = {b"/v1/chat/completions": HEAD % len(CHAT) + CHAT}
OTHER = HEAD % len(V2) + V2
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = [int(l.split(b":")[1]) for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length")]
            await reader.readexactly(length[0] if length else 0)
            writer.write(ANSWERS.get(head.split(b" ", 2)[1], OTHER))
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


# One fixed v2 answer to every request, after its body was read, served by the guard's server or aiohttp's low-level
# server (no application, no router, no access log: as the guard used it): argv[1] picks which, argv[2] the port.
_SERVER_SIDE = """
import asyncio, sys
V2 = b'{"model_name":"iris","outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","data":[0]}]}'
JSON = [("Content-Type", "application/json")]
async def main(which, port):
    if which == "devmlops":
        from devmlops.guard.server import HttpServer, Response
        async def handle(request):
            await request.read()
            return Response(200, JSON, V2)
        await HttpServer(handle, 65536).listen("127.0.0.1", port)
    else:
        from aiohttp import web
        async def handle(request):
            await request.read()
            return web.Response(body=V2, headers=JSON)
        runner = web.ServerRunner(web.Server(handle, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""
SERVERS = ("devmlops", "aiohttp")


@contextmanager
def fixed_server() -> Iterator[str]:
    """``_FIXED_SERVER`` in a process of its own, at the URL yielded."""
    from devmlops.harness.processes import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _FIXED_SERVER, str(port)])
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the fixed-answer server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


def client_cpu(requests: int, rounds: int) -> dict[str, list[float]]:
    """CPU µs a request of the guard's upstream client and of aiohttp's, ``requests`` sequential requests a round,
    the two interleaved, against ``_FIXED_SERVER`` in its own process."""
    import aiohttp

    from devmlops.guard.upstream import UpstreamClient

    body = json.dumps(IRIS).encode()
    headers = [("Content-Type", "application/json"), ("Accept", "*/*"), ("Accept-Encoding", "identity")]

    async def run(upstream: str) -> dict[str, list[float]]:
        lean = UpstreamClient(upstream)
        session = aiohttp.ClientSession(auto_decompress=False)
        url = f"{upstream}/v2/models/iris/infer"

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

    with fixed_server() as upstream:
        return asyncio.run(run(upstream))


def server_cpu(loadgen: Path, work: Path, rate: float, seconds: float, rounds: int, core: set[int] | None
               ) -> dict[str, list[float]]:  # fmt: skip
    """CPU µs a request of ``_SERVER_SIDE`` served by the guard's server and by aiohttp's, each in a process pinned
    to ``core``, at ``rate`` requests/s from the load generator, the two interleaved over ``rounds``."""
    from devmlops.harness.processes import free_port
    from tests.bench.bench_webhook import cpu_seconds

    cpu: dict[str, list[float]] = {which: [] for which in SERVERS}
    bodies = work / "server-side.jsonl"
    bodies.write_text(json.dumps(IRIS) + "\n")
    with ExitStack() as stack:
        urls, processes = {}, {}
        for which in SERVERS:
            port = free_port()
            argv = [sys.executable, "-c", _SERVER_SIDE, which, str(port)]
            process = stack.enter_context(_pinned(f"server-{which}", argv, port, work, core))
            urls[which], processes[which] = f"http://127.0.0.1:{port}/v2/models/iris/infer", process
            _load(loadgen, urls[which], bodies, "-conns", "8", "-requests", "500")
        for _ in range(rounds):
            for which in SERVERS:
                before = cpu_seconds(processes[which].pid or 0)
                flags = ("-rate", f"{rate:g}", "-duration", f"{seconds:g}s", "-conns", "64")
                result = _load(loadgen, urls[which], bodies, *flags)
                cpu[which].append(1e6 * (cpu_seconds(processes[which].pid or 0) - before) / max(result["sent"], 1))
    return cpu


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


@dataclass(frozen=True)
class Pair:
    """One upstream, called directly and through a guard of its own."""

    key: str
    label: str
    path: str
    body: dict[str, Any]
    config: dict[str, Any]
    mlserver: bool  # the upstream is MLServer (at --mlserver-rate); the fixed-answer server otherwise (at --rate)


PAIRS = (
    Pair("v2", "fixed-answer server, v2 protocol", "/v2/models/iris/infer", IRIS, CONFIG, False),
    Pair("chat", "fixed-answer server, OpenAI chat, every check", "/v1/chat/completions", CHAT, CHAT_CONFIG, False),
    Pair("mlserver", "MLServer 1.7.1, scikit-learn, v2 protocol", "/v2/models/iris/infer", IRIS, CONFIG, True),
)


@contextmanager
def guard_process(upstream: str, pair: Pair, work: Path, core: set[int] | None) -> Iterator[tuple[str, Any]]:
    """`devmlops guard` in front of ``upstream`` with ``pair``'s configuration, started on ``core`` (its threads
    inherit it); yields its URL for the pair's path and the process."""
    from devmlops.harness.processes import free_port

    port, metrics = free_port(), free_port()
    argv = [sys.executable, "-m", "devmlops", "guard", f"--upstream={upstream}", f"--listen=127.0.0.1:{port}"]
    argv += [f"--metrics-listen=127.0.0.1:{metrics}", "--model=iris", "--config=" + json.dumps(pair.config)]
    with _pinned(f"guard-{pair.key}", argv, port, work, core) as guard:
        yield f"http://127.0.0.1:{port}{pair.path}", guard


@contextmanager
def _pinned(name: str, argv: list[str], port: int, work: Path, core: set[int] | None) -> Iterator[Any]:
    """``argv`` started on ``core`` (its threads inherit it; this process keeps its own), logged to ``work``;
    yields the process once it listens on ``port``, and stops it after."""
    from devmlops.harness.processes import ManagedProcess

    inherited = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, core)
    try:
        process = ManagedProcess(name, argv, log_path=work / f"{name}.log").start()
    finally:
        os.sched_setaffinity(0, inherited)
    try:
        process.wait_until(lambda: _listening(port), timeout=60, what=f"{name} listening")
        yield process
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second offered (fixed-answer server)")
    parser.add_argument("--mlserver-rate", type=float, default=150.0, help="requests per second offered to MLServer")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--client-requests", type=int, default=3000, help="requests a round of the client comparison")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.bench.bench_webhook import build_loadgen, cpu_seconds, rss_mib
    from tests.bench.report import write_section
    from tests.support.modelservers import mlserver

    cores = sorted(os.sched_getaffinity(0))
    guard_core = {cores[-1]} if len(cores) > 1 else None
    if guard_core is not None:  # everything but the guards on the other cores (the processes started later inherit)
        os.sched_setaffinity(0, set(cores[:-1]))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    guard_cpu: dict[str, list[float]] = {}
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        loadgen = build_loadgen(work)
        fixed = stack.enter_context(fixed_server())
        served = stack.enter_context(mlserver(work))
        urls: dict[tuple[str, str], str] = {}
        guards: dict[str, Any] = {}
        for pair in PAIRS:
            upstream = served if pair.mlserver else fixed
            (work / f"{pair.key}.jsonl").write_text(json.dumps(pair.body) + "\n")
            urls[pair.key, "guarded"], guards[pair.key] = stack.enter_context(
                guard_process(upstream, pair, work, guard_core)
            )
            urls[pair.key, "direct"] = upstream + pair.path
        for (key, _path), url in urls.items():  # warm every path (connections, first inference)
            _load(loadgen, url, work / f"{key}.jsonl", "-conns", "8", "-requests", "500")
        for round_number in range(args.rounds):
            for pair in PAIRS:
                rate = args.mlserver_rate if pair.mlserver else args.rate
                for path in ("direct", "guarded"):
                    guard = guards[pair.key]
                    before = cpu_seconds(guard.pid or 0)
                    flags = ("-rate", f"{rate:g}", "-duration", f"{args.seconds:g}s", "-conns", "64")
                    result = _load(loadgen, urls[pair.key, path], work / f"{pair.key}.jsonl", *flags)
                    if path == "guarded":
                        spent = cpu_seconds(guard.pid or 0) - before
                        guard_cpu.setdefault(pair.key, []).append(1e6 * spent / max(result["sent"], 1))
                    runs.setdefault((pair.key, path), []).append(result)
                    print(f"round {round_number + 1} {pair.key:8} {path:8} {result['throughput']:7.0f}/s "
                          f"p50 {result['p50_ms']:6.2f} p99 {result['p99_ms']:6.2f} ms "
                          f"{result['outcomes']}", flush=True)  # fmt: skip
        rss = {key: rss_mib(guard.pid or 0) for key, guard in guards.items()}
        servers = server_cpu(loadgen, work, args.rate, args.seconds, args.rounds, guard_core)
        print(f"server side CPU µs a request: {servers}", flush=True)
    clients = client_cpu(args.client_requests, args.rounds)
    print(f"upstream client CPU µs a request: {clients}", flush=True)
    text = report(runs, guard_cpu, rss, args, clients, servers, guard_core)
    print(text)
    write_section(args.output, text)


def report(
    runs: dict[tuple[str, str], list[dict[str, Any]]],
    guard_cpu: dict[str, list[float]],
    rss: dict[str, float],
    args: Any,
    clients: dict[str, list[float]],
    servers: dict[str, list[float]],
    guard_core: set[int] | None,
) -> str:
    def added(key: str, field: str) -> list[float]:
        return [g[field] - d[field] for d, g in zip(runs[key, "direct"], runs[key, "guarded"], strict=True)]

    def errors(key: str, path: str) -> int:
        return sum(n for run in runs[key, path] for outcome, n in run["outcomes"].items() if outcome != "ok")

    def spread(values: list[float]) -> str:
        return f"{median(values):.2f} ms ({min(values):.2f}-{max(values):.2f})"

    rows = [
        f"| {pair.label} | {args.mlserver_rate if pair.mlserver else args.rate:,.0f} | {path} | "
        f"{median(r['throughput'] for r in runs[pair.key, path]):,.0f} | "
        f"{median(r['p50_ms'] for r in runs[pair.key, path]):.2f} | "
        f"{median(r['p99_ms'] for r in runs[pair.key, path]):.2f} | {errors(pair.key, path)} |"
        for pair in PAIRS
        for path in ("direct", "guarded")
    ]
    figures = [
        f"| {pair.label} | {spread(added(pair.key, 'p50_ms'))} | {spread(added(pair.key, 'p99_ms'))} | "
        f"{median(guard_cpu[pair.key]):.0f} | {rss[pair.key]:.0f} |"
        for pair in PAIRS
    ]
    at_rate = [pair for pair in PAIRS if not pair.mlserver]
    goals = []
    for what, field, goal in (("p50 added < 1 ms", "p50_ms", 1), ("p99 added < 3 ms", "p99_ms", 3)):
        for pair in at_rate:
            values = added(pair.key, field)
            goals.append(f"| {what} at {args.rate:,.0f}/s, {pair.label} | {spread(values)} | "
                         f"{_met_delta(median(values), goal)} |")  # fmt: skip
    largest = max(rss.values())
    met = "yes" if largest < 80 else "**no**"
    goals.append(f"| guard RSS < 80 MiB (the largest of the three guards) | {largest:.0f} MiB | {met} |")
    ratios = [a / d for d, a in zip(clients["devmlops"], clients["aiohttp"], strict=True)]
    server_ratios = [a / d for d, a in zip(servers["devmlops"], servers["aiohttp"], strict=True)]
    command = (
        f"`make bench-guard` (python -m tests.bench.bench_guard --rate {args.rate:g} --mlserver-rate "
        f"{args.mlserver_rate:g} --seconds {args.seconds:g} --rounds {args.rounds})"
    )
    placement = (
        f"Each guard ran pinned to core {min(guard_core)}, everything else (upstreams, load generator) on the other "
        f"{'core' if len(os.sched_getaffinity(0)) == 1 else 'cores'}"
        if guard_core is not None
        else "One core: the guards shared it with everything else"
    )
    return "\n".join(
        [
            "## Serving guard: latency added in front of a model server",
            "",
            f"Command: {command}  ",
            "Each upstream called directly and through `devmlops guard` at a fixed arrival rate from the Go load "
            f"generator (open loop, {args.seconds:g} s a run, up to 64 connections), {args.rounds} interleaved "
            "rounds; medians. The fixed-answer server (a process of its own that answers at once) stands for a model "
            "server that keeps up with the goal's rate; its v2 guard checks the schema, the size and a per-client "
            "rate limit that does not bind, its chat guard every input check (injection, secrets, personal data) "
            f"and every output check. MLServer runs at the rate it sustains here. {placement}.",
            "",
            "| upstream | offered/s | path | answered/s | p50 ms | p99 ms | errors |",
            "|---|---:|---|---:|---:|---:|---:|",
            *rows,
            "",
            "| upstream | p50 added (min-max over rounds) | p99 added (min-max over rounds) | guard CPU µs a request "
            "| guard RSS MiB |",
            "|---|---:|---:|---:|---:|",
            *figures,
            "",
            "| goal | measured | met |",
            "|---|---:|---|",
            *goals,
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
            f"The guard's server (guard/server.py) against aiohttp's low-level server, which the guard used before: "
            f"CPU a request of a process that reads each request's body and sends one fixed v2 answer, served each "
            f"way at {args.rate:,.0f} requests/s from the load generator ({args.seconds:g} s, 64 connections), the "
            f"process pinned as the guards were, the two interleaved over {args.rounds} rounds; medians.",
            "",
            "| server | CPU µs a request | aiohttp's / this (min-max over rounds) |",
            "|---|---:|---:|",
            f"| guard/server.py | {median(servers['devmlops']):.0f} | {median(server_ratios):.2f} "
            f"({min(server_ratios):.2f}-{max(server_ratios):.2f}) |",
            f"| aiohttp {_aiohttp_version()} web.Server | {median(servers['aiohttp']):.0f} | 1.00 |",
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
