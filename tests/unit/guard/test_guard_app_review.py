"""Review of the guard's request handler (guard/app.py) on its own server, as a client of the model: the real guard
on loopback in front of a scripted model server (raw bytes, so an answer can break where a test needs it). Each test
fails on 91c34e1 for the reason its docstring names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from devmlops.core.manifests import Guard
from devmlops.guard import server as guard_server
from devmlops.guard.app import GuardSettings, create_server
from devmlops.guard.metrics import GuardMetrics

EMAIL = "alice.smith@example.com"
V2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["who owns the account?"]}]}


def _event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def _scripted(answer: bytes, *, close: bool) -> tuple[asyncio.Server, int, list[asyncio.StreamWriter]]:
    """A model server that reads one request (head and Content-Length body), writes ``answer`` and, with ``close``,
    closes the connection right after (an answer cut short when it declared more)."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # keep the connection until the guard closes it

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    return listener, listener.sockets[0].getsockname()[1], writers


async def _post(port: int, path: str, body: bytes, method: str = "POST") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return raw


def _run(guard: dict[str, Any], answer: bytes, check: Callable[[int], Awaitable[None]], **settings: Any) -> None:
    async def main() -> None:
        upstream, up_port, writers = await _scripted(answer, close=settings.pop("close", False))
        server, close = create_server(
            GuardSettings(
                upstream=f"http://127.0.0.1:{up_port}",
                guard=Guard.model_validate(guard),
                model="m",
                digest="sha256:" + "0" * 64,
                **settings,
            ),
            GuardMetrics.create(),
        )
        listener = await server.listen("127.0.0.1", 0)
        try:
            await check(listener.sockets[0].getsockname()[1])
        finally:
            await server.shutdown(listener, timeout=1)
            await close()
            upstream.close()
            for writer in writers:
                writer.close()
            await asyncio.sleep(0.05)

    asyncio.run(main())


def _audit(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_log_mode_keeps_its_finding_when_the_model_server_answers_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``action: log`` forwards and "writes the finding in the audit line" (docs/guard.md). An answer with a status
    of 500 or more was audited ``reason: upstream_status`` and the finding dropped: a client whose request makes
    the model server fail (here its answer carries an e-mail address, which log mode passes on) left no trace of
    what the checks found, in the audit or anywhere."""
    body = json.dumps(
        {"outputs": [{"name": "o", "shape": [1], "datatype": "BYTES", "data": [f"owner {EMAIL}"]}]}
    ).encode()
    answer = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )

    async def check(port: int) -> None:
        raw = await _post(port, "/v2/models/m/infer", json.dumps(V2).encode())
        assert raw.startswith(b"HTTP/1.1 500")
        assert EMAIL.encode() in raw  # log mode: passed on as it came

    _run({"action": "log", "output": {"pii": True}}, answer, check)
    [line] = _audit(capsys)
    assert (line["result"], line["reason"]) == ("error", "upstream_status")
    assert line.get("finding") == {"reason": "pii", "detail": "output: contains an e-mail address"}


def test_log_mode_keeps_a_finding_streamed_before_the_stream_broke(capsys: pytest.CaptureFixture[str]) -> None:
    """A stream in log mode sends an event with a hit on and remembers the finding for the end of the stream. When
    the stream ended otherwise (the model server's connection broke here; a client that closes its connection or
    reads slower than the upstream timeout does the same), the audit line said ``upstream`` (or ``client_closed``)
    and nothing of the e-mail address the client was sent."""
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunk(_event(f"mail {EMAIL}"))
        + _chunk(_event(" and more"))
    )  # no last chunk: the connection closes mid-answer

    async def check(port: int) -> None:
        raw = await _post(
            port, "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        )
        assert EMAIL.encode() in raw  # log mode streams on

    _run({"action": "log", "output": {"pii": True}}, answer, check, close=True)
    [line] = _audit(capsys)
    assert (line["result"], line["reason"]) == ("error", "upstream")
    assert line.get("finding") == {"reason": "pii", "detail": "output: contains an e-mail address"}


def test_a_stream_is_audited_once_when_its_end_waits_for_the_client(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream's audit line is written before its end is sent, and sending the end waits while the client reads
    slowly (``Stream.end`` drains; here the wait is made longer than the upstream timeout). The upstream timeout
    covers that wait: it fired after the line was written, ``handle`` caught the TimeoutError and wrote a second
    line (``upstream``, 502) for the same request: two audit lines, two counts in the metrics."""
    original = guard_server.Stream.end

    async def slow_end(self: guard_server.Stream) -> None:
        await asyncio.sleep(0.6)  # what a paused transport does while the client reads nothing
        await original(self)

    monkeypatch.setattr(guard_server.Stream, "end", slow_end)
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunk(_event("hello"))
        + b"0\r\n\r\n"
    )

    async def check(port: int) -> None:
        await _post(port, "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')

    _run({"output": {"pii": True}}, answer, check, upstream_timeout_seconds=0.3)
    lines = _audit(capsys)
    assert [(line["status"], line["result"]) for line in lines] == [(200, "allowed")]


def test_a_forwarded_request_is_audited_when_the_guard_stops(capsys: pytest.CaptureFixture[str]) -> None:
    """On SIGTERM the guard lets requests in flight finish for 10 s (``HttpServer.shutdown``), then ``asyncio.run``
    cancels what is left: a request forwarded to a model server still answering (a long generation) ended in a
    CancelledError, which ``handle``'s ``except Exception`` does not catch, and left no audit line although the
    model server had it."""

    async def check(port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(V2).encode()
        writer.write(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.3)  # forwarded; the model server never answers
        # What asyncio.run does to the tasks that shutdown left when serve() returns: cancel them.
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.sleep(0.1)
        writer.close()

    _run({"protocol": "v2"}, b"", check)
    lines = _audit(capsys)
    assert [(line["path"], line["result"]) for line in lines] == [("/v2/models/m/infer", "error")]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_line_separator_in_a_streamed_token_does_not_hide_what_follows(separator: str) -> None:
    """``_event_texts`` split an event into lines with ``str.splitlines``, which also breaks at U+2028, U+2029 and
    NEL (U+0085). A JSON serializer writes those raw (pydantic's, which vLLM's OpenAI server streams with, does),
    and a server-sent events parser splits lines at CR and LF only: the client read the whole ``data:`` line, the
    guard read the part before the separator (not JSON: taken as text) and dropped the rest, which no longer starts
    with ``data:``. A model told to put a separator before an e-mail address streamed it past ``pii`` in block mode."""
    event = (
        b"data: "
        + json.dumps(
            {"choices": [{"index": 0, "delta": {"content": f"{separator}{EMAIL}"}}]}, ensure_ascii=False
        ).encode()
        + b"\n\n"
    )
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunk(event)
        + b"0\r\n\r\n"
    )

    async def check(port: int) -> None:
        raw = await _post(
            port, "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        )
        assert b"devmlops_guard" in raw
        assert EMAIL.encode() not in raw

    _run({"output": {"pii": True}}, answer, check)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_a_protocol_takes_its_inference_requests_by_post_only(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/guard.md: ``protocol: v2`` admits "only ``POST /v2/models/<name>[/versions/<v>]/infer``". Any method
    but GET, HEAD and OPTIONS went through with a body: forwarded to the model server, yet not an inference request
    for the guard (``is_inference`` is POST only), so never split to the canary and never read by the drift and
    probing signals. A model server that answers such a method as it answers POST would take input the signals miss."""
    body = json.dumps({"outputs": [{"name": "o", "shape": [1], "datatype": "FP32", "data": [0.5]}]}).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)

    async def check(port: int) -> None:
        raw = await _post(port, "/v2/models/m/infer", json.dumps(V2).encode(), method=method)
        assert raw.startswith(b"HTTP/1.1 400")

    _run({"protocol": "v2"}, answer, check)
    [line] = _audit(capsys)
    assert (line["result"], line["reason"]) == ("blocked", "schema")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
)
def test_a_request_the_server_refuses_is_audited(
    request_bytes: bytes, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "One audit line per request, refused ones too" (the module's promise, docs/guard.md). A head the server's
    parser refused (two Content-Lengths, a head over 64 KiB, more than 32 requests sent ahead) was answered by the
    server without the handler: no audit line, no count in devmlops_guard_requests_total. A client could try the
    parser's edges, a smuggling attempt here, and leave no trace."""

    async def check(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 %d" % status)

    _run({"protocol": "v2"}, b"", check)
    [line] = _audit(capsys)
    assert (line["status"], line["result"], line["reason"]) == (status, "blocked", "bad_request")
    assert line["client"] == "ip:127.0.0.1"


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready"])
def test_a_client_over_the_rate_limit_does_not_fail_the_kubelets_probes(path: str) -> None:
    """The kubelet's readiness, liveness and startup probes reach the guard's port (core/render.py) and went through
    the rate limits like any request: a client sending over ``rateLimit`` (the bucket of all clients) for some 15 s
    had every Pod marked unready and, after 30 s, the guard container restarted by its liveness probe; with a
    ``clientHeader``, a client naming itself ``ip:<node address>`` drained the kubelet's own ``perClient`` bucket. A
    limit meant to shed load took the model off the network. Probes (GET or HEAD of the v2 health paths, no body)
    are not rate limited; everything else is, as before."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    async def send(port: int, head: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return raw

    async def check(port: int) -> None:
        # The client's requests take the only token of both buckets (this one is then refused for its body).
        spent = await send(
            port, b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        )
        assert spent.startswith(b"HTTP/1.1 400")
        over = await send(port, b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert over.startswith(b"HTTP/1.1 429")  # the limits still hold for everything else
        probe = await send(port, f"GET {path} HTTP/1.1\r\nHost: 10.0.0.1:8000\r\nConnection: close\r\n\r\n".encode())
        assert probe.startswith(b"HTTP/1.1 200")

    limits = {"requestsPerSecond": 1, "burst": 1}
    _run({"protocol": "v2", "rateLimit": limits, "perClient": limits}, answer, check, clock=lambda: 0.0)


@pytest.mark.parametrize("stream", [False, True])
def test_vllms_reasoning_field_is_read_by_the_output_checks(stream: bool) -> None:
    """The output checks read an answer's ``reasoning_content``, the chain of thought's field as vLLM first named
    it; vLLM renamed it ``reasoning`` (vllm-project/vllm#27752, November 2025) and removed the old name (#33402,
    January 2026). A reasoning model's thinking, which a prompt can steer, left the Pod unread in block mode, whole
    and streamed."""
    if stream:
        event = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"reasoning": EMAIL}}]}).encode() + b"\n\n"
        answer = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + _chunk(event)
            + b"0\r\n\r\n"
        )
    else:
        body = json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "done", "reasoning": EMAIL}}]}
        ).encode()
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
            len(body),
            body,
        )

    async def check(port: int) -> None:
        raw = await _post(
            port, "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        )
        assert EMAIL.encode() not in raw
        assert b"devmlops_guard" in raw

    _run({"output": {"pii": True}}, answer, check)


def test_a_request_naming_its_client_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """``clientHeader`` names the client "as a trusted proxy in front sets it" (docs/guard.md), and the guard took
    the header's first value. A proxy that adds its header (Envoy's and Istio's ``add``) leaves the client's own
    before it: mallory sending ``X-Client: alice`` was counted, rate limited, probed and audited as alice. With two
    values the guard cannot tell which the proxy wrote: the request is refused."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    async def check(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\nX-Client: alice\r\nX-Client: mallory\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(12), 10)
        writer.close()
        assert raw == b"HTTP/1.1 400"

    _run({"protocol": "v2", "clientHeader": "X-Client"}, answer, check)
    [line] = _audit(capsys)
    assert (line["result"], line["reason"]) == ("blocked", "bad_request")
