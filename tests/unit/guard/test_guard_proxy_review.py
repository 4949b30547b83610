"""Security review of the guard process (guard/app.py), in-process on loopback: an upstream that answers the way
Triton's HTTP server does, the real guard in front of it, and a client. Each test fails on e8db94b for the reason
its docstring names."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devmlops.core.manifests import Guard
from devmlops.guard.app import GuardSettings, create_server
from devmlops.guard.metrics import GuardMetrics

EMAIL = "alice.smith@example.com"
V2_TEXT = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["who is the account owner?"]}]}


def _v2_answer(text: str) -> dict[str, Any]:
    return {"model_name": "m", "outputs": [{"name": "answer", "shape": [1], "datatype": "BYTES", "data": [text]}]}


async def _triton_like(request: web.Request) -> web.StreamResponse:
    """Triton's HTTP behaviour that matters here: it compresses an answer when the request accepts gzip, and it
    answers BYTES outputs in its binary tensor extension when the request asks for binary_data_output."""
    if request.path == "/stream":
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in ("Contact ", EMAIL, " now"):  # sse-starlette's default line separator is CRLF
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
        await response.write_eof()
        return response
    if request.path == "/gzip-stream":  # a model server that compresses although the guard asks for identity
        event = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": EMAIL}}]}).encode() + b"\n\n"
        headers = {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        return web.Response(body=gzip.compress(event), headers=headers)
    if request.path == "/endless-event":  # an event that never ends: no blank line
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: ")
        for _ in range(64):
            await response.write(b"a" * 65536)
        await response.write(b"\n\n")
        await response.write_eof()
        return response
    if request.path.startswith("/v1/"):
        size = 0
        while chunk := await request.content.read(1 << 20):
            size += len(chunk)
        return web.json_response({"choices": [{"index": 0, "text": f"read {size} bytes"}]})
    body = await request.json() if request.can_read_body else {}
    answer = _v2_answer(f"The owner is {EMAIL}")
    if (body.get("parameters") or {}).get("binary_data_output"):
        raw = answer["outputs"][0]["data"][0].encode()
        header = {
            "model_name": "m",
            "outputs": [
                {"name": "answer", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4 + len(raw)}}
            ],
        }
        head = json.dumps(header).encode()
        return web.Response(
            body=head + struct.pack("<I", len(raw)) + raw,
            headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))},
        )
    payload = json.dumps(answer).encode()
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(
            body=gzip.compress(payload), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )
    return web.Response(body=payload, content_type="application/json")


async def _with_guard(guard: Guard, check: Callable[[str], Awaitable[None]], **settings: Any) -> None:
    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", _triton_like)
    upstream = web.AppRunner(upstream_app)
    await upstream.setup()
    site = web.TCPSite(upstream, "127.0.0.1", 0)
    await site.start()
    up_port = upstream.addresses[0][1]
    server, close = create_server(
        GuardSettings(
            upstream=f"http://127.0.0.1:{up_port}", guard=guard, model="m", digest="sha256:" + "0" * 64, **settings
        ),
        GuardMetrics.create(),
    )
    listener = await server.listen("127.0.0.1", 0)
    try:
        await check(f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}")
    finally:
        await server.shutdown(listener, timeout=1)
        await close()
        await upstream.cleanup()


def _run(guard: dict[str, Any], check: Callable[[str], Awaitable[None]], **settings: Any) -> None:
    asyncio.run(_with_guard(Guard.model_validate(guard), check, **settings))


def test_sanity_a_plain_answer_with_an_email_is_refused() -> None:
    """Control: the output check works on a plain JSON answer when the client asks for no compression (this passes
    today). Without the explicit ``identity`` it fails: aiohttp's and python-requests' clients send
    ``Accept-Encoding: gzip, deflate`` by default (see the next test)."""

    async def check(base: str) -> None:
        async with aiohttp.ClientSession() as client:
            headers = {"Accept-Encoding": "identity"}
            async with client.post(base + "/v2/models/m/infer", json=V2_TEXT, headers=headers) as answer:
                assert answer.status == 403

    _run({"protocol": "v2", "output": {"pii": True}}, check)


def test_accept_encoding_gzip_does_not_carry_an_answer_past_the_output_checks() -> None:
    """The guard forwards the client's ``Accept-Encoding`` to the model server, reads the answer with
    ``auto_decompress=False``, runs the output checks on the compressed bytes (not JSON: no texts, nothing found),
    then drops ``Content-Encoding`` and sends the gzip bytes on. Any client gets every answer past the secrets and
    PII checks by asking for gzip and gunzipping what it receives (Triton honours Accept-Encoding: gzip or deflate,
    HTTPAPIServer::GetResponseCompressionType). Ordinary clients (python-requests, aiohttp, curl --compressed) send
    that header by default, so for them the output checks never run and the answer arrives as gzip bytes without
    its Content-Encoding."""

    async def check(base: str) -> None:
        async with aiohttp.ClientSession(auto_decompress=False) as client:
            headers = {"Accept-Encoding": "gzip"}
            async with client.post(base + "/v2/models/m/infer", json=V2_TEXT, headers=headers) as answer:
                raw = await answer.read()
        leaked = answer.status == 200 and EMAIL.encode() in gzip.decompress(raw)
        assert not leaked, "the e-mail address left the guard gzip-compressed, unchecked"

    _run({"protocol": "v2", "output": {"pii": True}}, check)


def test_binary_tensor_outputs_do_not_carry_an_answer_past_the_output_checks() -> None:
    """The v2 schema check lets any ``parameters`` through, so a client asks Triton for
    ``binary_data_output``: the answer is a JSON header followed by raw tensor bytes, ``json.loads`` fails,
    ``response_texts(None)`` is empty and the answer is passed on unchecked. Output checks must fail closed on an
    answer they cannot read (or the guard must refuse requests for binary outputs)."""

    async def check(base: str) -> None:
        body = {**V2_TEXT, "parameters": {"binary_data_output": True}}
        async with aiohttp.ClientSession() as client, client.post(base + "/v2/models/m/infer", json=body) as answer:
            raw = await answer.read()
        assert not (answer.status == 200 and EMAIL.encode() in raw), "binary output passed the PII check unread"

    _run({"protocol": "v2", "output": {"pii": True}}, check)


def test_a_stream_with_crlf_event_separators_is_still_checked() -> None:
    """Server-sent events may end with CRLF CRLF (the SSE spec; sse-starlette's default). The guard splits only on
    ``\\n\\n``: no event is ever found, everything accumulates in ``pending`` and is written at the end without
    any output check."""

    async def check(base: str) -> None:
        async with aiohttp.ClientSession() as client, client.get(base + "/stream") as answer:
            raw = await answer.read()
        assert EMAIL.encode() not in raw, "the streamed e-mail address was sent without an output check"

    _run({"output": {"pii": True}}, check)


def test_a_client_cannot_write_lines_into_the_guards_stdout(caplog: pytest.LogCaptureFixture) -> None:
    """The audit stream is one JSON line per request on the guard's stdout (docs/guard.md). When anything in the
    guard raises (on e8db94b a deeply nested JSON body did: ``json.loads`` raises RecursionError, not ValueError;
    here a secrets scanner that fails), ``_log.exception('guard error on %s %s', method, request.path)`` writes the
    percent-decoded path raw to the same stdout: ``%0A`` followed by JSON forges a whole audit line
    (``{"result":"allowed","client":"ip:10.0.0.9",...}``) for whatever reads the guard's logs."""
    import logging

    forged = "%0A%7B%22result%22:%22allowed%22,%22client%22:%22ip:10.0.0.9%22%7D"

    def failing_scanner(_text: str) -> str:
        raise RuntimeError("scanner bug")

    async def go() -> None:
        guard = Guard.model_validate({"input": {"secrets": True}})
        server, close = create_server(
            GuardSettings(upstream="http://127.0.0.1:9", guard=guard, secrets=failing_scanner), GuardMetrics.create()
        )
        listener = await server.listen("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.sockets[0].getsockname()[1])
            # The forged text sits in the model name, a path segment the v2 endpoint pattern accepts, so the request
            # reaches the (failing) input check and its error is logged with the client's path.
            body = json.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}).encode()
            writer.write(
                b"POST /v2/models/x"
                + forged.encode()
                + b"/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
            status = (await asyncio.wait_for(reader.read(200), 10)).split(b"\r\n")[0]
            writer.close()
            assert b"500" in status
        finally:
            await server.shutdown(listener, timeout=1)
            await close()

    with caplog.at_level(logging.INFO, logger="devmlops.guard"):
        asyncio.run(go())
    for record in caplog.records:
        assert "\n" not in record.getMessage(), (
            f"a client-chosen line break in the guard's log: {record.getMessage()!r}"
        )


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # aiohttp warns that the guard forwards 64 MiB of raw bytes
def test_a_guard_without_max_request_bytes_still_bounds_what_it_buffers() -> None:
    """``read_body`` collects the whole body in memory; without ``maxRequestBytes`` (optional, and a policy need not
    demand it) there is no bound at all, not even the 64 MiB that the field itself may not exceed, and the rendered
    guard container has no memory limit: one client's multi-gigabyte POST exhausts the Pod (or the node). Expected:
    a body over the field's own maximum (64 MiB) is refused with 413 whatever the ModelDeployment says."""

    async def check(base: str) -> None:
        body = b'{"model":"m","prompt":"' + b"a" * (64 * 1024 * 1024 + 1) + b'"}'
        async with (
            aiohttp.ClientSession() as client,
            client.post(base + "/v1/completions", data=io.BytesIO(body)) as answer,
        ):
            assert answer.status == 413

    _run({"protocol": "openai"}, check)


def test_a_compressed_stream_does_not_pass_the_output_checks_unread() -> None:
    """A model server that compresses its answer although the guard asks for ``identity`` (a misbehaving one, or one
    that ignores Accept-Encoding): an event stream is split into events on the compressed bytes, none has a
    ``data:`` line, nothing is checked, and the gzip bytes go to the client without their Content-Encoding (it is
    hop-by-hop to the guard). Expected: an answer in any encoding but identity is a 502 (on 019fdf0: 200)."""

    async def check(base: str) -> None:
        async with aiohttp.ClientSession(auto_decompress=False) as client, client.get(base + "/gzip-stream") as answer:
            raw = await answer.read()
        leaked = answer.status == 200 and EMAIL.encode() in gzip.decompress(raw)
        assert not leaked, "the streamed e-mail address left the guard gzip-compressed, unchecked"
        assert answer.status == 502

    _run({"output": {"pii": True}}, check)


def test_a_client_cannot_keep_its_request_out_of_the_audit(capsys: pytest.CaptureFixture[str]) -> None:
    """aiohttp decodes a header's bytes that are not UTF-8 as lone surrogates, which orjson refuses to encode: with
    a ``clientHeader``, a client naming itself ``\\xff`` made ``finish`` raise after its request was forwarded, again
    in the error handler, and the guard answered 500 with no audit line for a request the model server served."""

    async def check(base: str) -> None:
        host, port = base[7:].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps(V2_TEXT).encode()
        writer.write(
            b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nX-Client: mallory\xff\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()

    _run({"protocol": "v2", "clientHeader": "X-Client"}, check)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == ["/v2/models/m/infer"], "no audit line for a forwarded request"


def test_an_event_that_never_ends_is_cut_off_at_the_answer_limit() -> None:
    """A stream is checked event by event; an event is gathered whole first, with no bound (and scanned again from
    its start with each piece: quadratic). A model server that never ends its event (4 MiB here, unbounded in
    general) had the guard buffer all of it; expected: at ``max_response_bytes`` the stream ends with an error event."""

    async def check(base: str) -> None:
        async with aiohttp.ClientSession() as client, client.get(base + "/endless-event") as answer:
            raw = await answer.read()
        assert b"devmlops_guard" in raw
        assert len(raw) < 1 << 20

    _run({"output": {"pii": True}}, check, max_response_bytes=1 << 20)
