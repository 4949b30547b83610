"""The guard's HTTP server against raw bytes on loopback: framing of what it reads and writes, pipelining, limits,
and what it refuses."""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from devmlops.guard import server as server_module
from devmlops.guard.server import BadRequest, HttpServer, Request, Response, Stream

Seen = list[dict[str, Any]]


def synchronously(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run


async def echo(request: Request) -> Response:
    """Answers with what it read: method, target, path, the body's length (or 'over' / the framing error)."""
    try:
        body = await request.read()
    except BadRequest as exc:
        return Response(400, [], f"bad: {exc}".encode())
    described = "over" if body is None else str(len(body))
    text = f"{request.method} {request.target} {request.path} {described}"
    return Response(200, [("Content-Type", "text/plain")], text.encode())


@asynccontextmanager
async def serving(handler: Callable[[Request], Awaitable[Response | Stream]] = echo, max_body: int = 1024
                  ) -> AsyncIterator[int]:  # fmt: skip
    server = HttpServer(handler, max_body)
    listener = await server.listen("127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        await server.shutdown(listener, timeout=1)


async def exchange(port: int, data: bytes, *, then: bytes = b"", wait: float = 0.0) -> bytes:
    """Write ``data`` (then, after ``wait`` seconds, ``then``) and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if then:
        await asyncio.sleep(wait)
        writer.write(then)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split what a server wrote into answers (Content-Length or chunked framing)."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in headers:
            length = int(headers["content-length"])
            body, raw = raw[:length], raw[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, raw = raw.partition(b"\r\n")
                size = int(size_line, 16)
                body, raw = body + raw[:size], raw[size + 2 :]
                if not size:
                    break
        else:
            body, raw = (b"", raw) if status < 200 else (raw, b"")
        out.append((status, headers, body))
    return out


GET = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
CLOSE = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@synchronously
async def test_keep_alive_requests_on_one_connection_are_answered_in_order() -> None:
    async with serving() as port:
        raw = await exchange(port, GET + b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" + CLOSE)
    got = answers(raw)
    assert [(status, body) for status, _, body in got] == [
        (200, b"GET /v2/health/ready /v2/health/ready 0"),
        (200, b"POST /p /p 3"),
        (200, b"GET /last /last 0"),
    ]
    assert all("date" in headers for _, headers, _ in got)
    assert got[-1][1]["connection"] == "close"
    assert "connection" not in got[0][1]


@synchronously
async def test_pipelined_requests_are_answered_in_arrival_order_whatever_each_takes() -> None:
    async def slow_first(request: Request) -> Response:
        await request.read()
        await asyncio.sleep(0.2 if request.target == "/1" else 0)
        return Response(200, [], request.target.encode())

    async with serving(slow_first) as port:
        raw = await exchange(port, b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % n for n in range(1, 6)) + CLOSE)
    assert [body for _, _, body in answers(raw)] == [b"/1", b"/2", b"/3", b"/4", b"/5", b"/last"]


@synchronously
async def test_a_chunked_body_is_read_whole_and_its_trailers_are_not_headers() -> None:
    seen: list[list[tuple[str, str]]] = []

    async def handler(request: Request) -> Response:
        body = await request.read()
        seen.append(request.headers)
        return Response(200, [], body or b"")

    async with serving(handler) as port:
        raw = await exchange(
            port,
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: smuggled\r\n\r\n",
        )
    assert answers(raw)[0][2] == b"abcdefg"
    assert all(name.lower() != "x-trailer" for name, _ in seen[0])


@synchronously
async def test_a_body_over_the_limit_is_read_as_none_and_the_connection_closes_after_the_answer() -> None:
    async with serving(max_body=10) as port:
        # Chunked, so nothing declares the size: counted as it arrives. The next request is never read.
        raw = await exchange(
            port, b"POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n" + GET
        )
    got = answers(raw)
    assert [(status, body) for status, _, body in got] == [(200, b"POST /big /big over")]
    assert got[0][1]["connection"] == "close"


@synchronously
async def test_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /e HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        raw = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
    assert answers(raw)[0][2] == b"POST /e /e 5"


@synchronously
async def test_a_refusal_before_the_body_sends_no_100_continue_and_closes_the_connection() -> None:
    async def refuse(_request: Request) -> Response:
        return Response(429, [], b"later")

    async with serving(refuse) as port:
        raw = await exchange(port, b"POST /e HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    got = answers(raw)
    assert [(status, body) for status, _, body in got] == [(429, b"later")]
    assert got[0][1]["connection"] == "close"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="no-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", id="space-in-field-name"),
        pytest.param(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", id="bare-cr-in-value"),
        # Request smuggling: two framings, or two lengths, of one body.
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="cl-and-te"
        ),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", id="two-lengths"),
    ],
)
@synchronously
async def test_a_request_the_parser_cannot_read_is_answered_400_and_the_connection_closed(request_bytes: bytes) -> None:
    handled: list[str] = []

    async def handler(request: Request) -> Response:
        handled.append(request.target)
        return await echo(request)

    async with serving(handler) as port:
        raw = await exchange(port, GET + request_bytes + GET)
    got = answers(raw)
    # The request before it is answered, the broken one is refused, and nothing after it is read.
    assert [status for status, _, _ in got] == [200, 400]
    assert handled == ["/v2/health/ready"]


@synchronously
async def test_a_body_whose_framing_breaks_is_refused_through_read() -> None:
    async with serving() as port:
        raw = await exchange(port, b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n" + GET)
    got = answers(raw)
    assert [status for status, _, _ in got] == [400]
    assert got[0][2].startswith(b"bad: malformed request")


@synchronously
async def test_an_endless_head_is_refused_431() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nX-Long: ")
        for _ in range(20):  # 80 KiB of one header value, in writes of 4 KiB
            writer.write(b"a" * 4096)
            await writer.drain()
            await asyncio.sleep(0.005)
        raw = await asyncio.wait_for(reader.read(-1), 5)  # the answer arrives although the client kept writing
        writer.close()
    assert answers(raw)[0][0] == 431


@synchronously
async def test_many_small_keep_alive_requests_are_not_mistaken_for_an_endless_head() -> None:
    """Heads of whole requests are not framing in a row: only bytes of one unfinished head count."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"GET /h HTTP/1.1\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"
        for _ in range(100):  # 100 KiB of heads, one request at a time
            writer.write(head)
            status = await asyncio.wait_for(reader.readuntil(b"GET /h /h 0"), 5)
            assert status.startswith(b"HTTP/1.1 200")
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "target", "path"),
    [
        (b"GET /v2/models/m/%69nfer?x=%20 HTTP/1.1\r\n\r\n", "/v2/models/m/%69nfer?x=%20", "/v2/models/m/infer"),
        (b"GET /a#frag HTTP/1.1\r\n\r\n", "/a", "/a"),
        (b"GET http://evil.example/v2/models/m/infer?q=1 HTTP/1.1\r\n\r\n", "/v2/models/m/infer?q=1",
         "/v2/models/m/infer"),
        (b"OPTIONS * HTTP/1.1\r\n\r\n", "*", "*"),
    ],
)  # fmt: skip
@synchronously
async def test_the_target_passed_on_and_the_path_the_checks_read(request_bytes: bytes, target: str, path: str) -> None:
    async def handler(request: Request) -> Response:
        return Response(200, [], f"{request.target} {request.path}".encode())

    async with serving(handler) as port:
        raw = await exchange(port, request_bytes + CLOSE)
    assert answers(raw)[0][2].decode() == f"{target} {path}"


@synchronously
async def test_http_1_0_closes_after_its_answer_unless_it_asks_for_keep_alive() -> None:
    async with serving() as port:
        raw = await exchange(port, b"GET /old HTTP/1.0\r\n\r\n" + GET)
        assert [body for _, _, body in answers(raw)] == [b"GET /old /old 0"]
        raw = await exchange(port, b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + CLOSE)
        assert len(answers(raw)) == 2


@synchronously
async def test_answers_to_head_204_and_304_carry_no_body() -> None:
    async def handler(request: Request) -> Response:
        status = int(request.target[1:])
        return Response(status, [], b"a body that must not be sent")

    async with serving(handler) as port:
        raw = await exchange(
            port, b"HEAD /200 HTTP/1.1\r\n\r\nGET /204 HTTP/1.1\r\n\r\nGET /304 HTTP/1.1\r\n\r\n" + CLOSE
        )
    # What follows each head is the next head: any body sent would break this split.
    heads = raw.split(b"\r\n\r\n")
    assert [head.split(b" ")[1] for head in heads[:3]] == [b"200", b"204", b"304"]
    assert b"Content-Length: 28" in heads[0]  # HEAD: the length the GET would have
    assert b"Content-Length" not in heads[1]
    assert b"Content-Length" not in heads[2]


@synchronously
async def test_a_stream_is_chunked_for_http_1_1_and_delimited_by_the_close_for_http_1_0() -> None:
    async def handler(request: Request) -> Stream:
        stream = await request.stream(200, [("Content-Type", "text/event-stream")])
        for part in (b"data: 1\n\n", b"", b"data: 2\n\n"):  # an empty part must not end the chunked body
            await stream.write(part)
        await stream.end()
        return stream

    async with serving(handler) as port:
        raw = await exchange(port, GET + CLOSE)
        got = answers(raw)
        assert [(status, headers["transfer-encoding"], body) for status, headers, body in got] == [
            (200, "chunked", b"data: 1\n\ndata: 2\n\n")
        ] * 2
        raw = await exchange(port, b"GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding" not in head
        assert b"Connection: close" in head
        assert body == b"data: 1\n\ndata: 2\n\n"


@synchronously
async def test_a_stream_left_open_or_a_handler_error_closes_the_connection() -> None:
    async def handler(request: Request) -> Response | Stream:
        if request.target == "/open":
            stream = await request.stream(200, [])
            await stream.write(b"part")
            return stream
        raise RuntimeError("a bug")

    async with serving(handler) as port:
        raw = await exchange(port, b"GET /open HTTP/1.1\r\n\r\n" + GET)
        assert raw.endswith(b"4\r\npart\r\n")  # no last chunk: the client sees the answer cut, not complete
        raw = await exchange(port, b"GET /bug HTTP/1.1\r\n\r\n" + GET)
        got = answers(raw)
        assert [status for status, _, _ in got] == [500]
        assert got[0][1]["connection"] == "close"


@pytest.mark.parametrize(("how", "raised"), [("abort", "ConnectionResetError"), ("close", "BadRequest")])
@synchronously
async def test_a_client_that_leaves_mid_body_ends_the_read(how: str, raised: str) -> None:
    """A reset ends the read as a lost connection; a plain close (the client's side ended) as a broken body."""
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler(request: Request) -> Response:
        try:
            await request.read()
            outcome.set_result("read")
        except (ConnectionResetError, BadRequest) as exc:
            outcome.set_result(type(exc).__name__)
        return Response(200, [])

    async with serving(handler) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        await asyncio.sleep(0.1)
        if how == "abort":  # a reset: SO_LINGER with no time to linger
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        assert await asyncio.wait_for(outcome, 5) == raised


@synchronously
async def test_an_upgrade_is_answered_as_a_plain_request_then_the_connection_closes() -> None:
    async with serving() as port:
        raw = await exchange(
            port, b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello" + GET
        )
    got = answers(raw)
    assert [(status, body) for status, _, body in got] == [(200, b"GET /ws /ws 0")]


@synchronously
async def test_an_idle_keep_alive_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "_IDLE_SECONDS", 0.2)
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET)
        raw = await asyncio.wait_for(reader.read(-1), 5)  # ends when the server closes the idle connection
        writer.close()
    assert len(answers(raw)) == 1


@synchronously
async def test_a_connection_in_use_is_kept_and_a_head_that_never_ends_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "_IDLE_SECONDS", 0.3)
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(8):  # 0.8 s of requests 0.1 s apart: never idle for the 0.3 s
            writer.write(GET)
            await asyncio.wait_for(reader.readuntil(b"/v2/health/ready 0"), 5)
            await asyncio.sleep(0.1)
        writer.write(b"GET /slow HTTP/1.1\r\nX-A: 1\r\n")  # then a head that is never finished
        started = asyncio.get_running_loop().time()
        closed = asyncio.ensure_future(reader.read(-1))
        for _ in range(40):  # dribbled for up to 2 s: bytes keep coming, but no request
            await asyncio.sleep(0.05)
            if closed.done():
                break
            writer.write(b"X-B: 2\r\n")
        assert await asyncio.wait_for(closed, 5) == b""
        assert asyncio.get_running_loop().time() - started < 1.0
        writer.close()


@synchronously
async def test_a_slow_reader_holds_the_stream_back_instead_of_buffering_it() -> None:
    written: list[int] = []

    async def handler(request: Request) -> Stream:
        stream = await request.stream(200, [])
        for _ in range(400):  # 100 MiB offered; a client that reads nothing must stop this well short of it
            await stream.write(b"x" * (256 * 1024))
            written.append(1)
        await stream.end()
        return stream

    async with serving(handler) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        writer.write(GET)
        await asyncio.sleep(0.5)
        assert 0 < len(written) < 100
        writer.close()


@synchronously
async def test_a_client_that_ends_its_side_after_its_requests_still_gets_their_answers() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET + b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nab")
        writer.write_eof()
        raw = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
    assert [body for _, _, body in answers(raw)] == [b"GET /v2/health/ready /v2/health/ready 0", b"POST /p /p 2"]


@synchronously
async def test_a_client_that_ends_its_side_mid_body_gets_a_refusal() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /p HTTP/1.1\r\nContent-Length: 20\r\n\r\nab")
        writer.write_eof()
        raw = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
    assert answers(raw)[0][2] == b"bad: the client ended its side before the body was complete"


@synchronously
async def test_a_413_reaches_a_client_that_is_still_sending_its_body() -> None:
    """Closing with the client's bytes unread resets the connection, and the reset can overtake the answer."""
    async with serving(max_body=1024) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /big HTTP/1.1\r\nContent-Length: 4194304\r\n\r\n")
        try:
            for _ in range(64):  # 4 MiB, more than the kernel buffers of both sides hold
                writer.write(b"x" * 65536)
                await writer.drain()
        except ConnectionError:
            pass
        raw = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
    assert answers(raw)[0][2] == b"POST /big /big over"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(b"a:\r\n" * 20000, id="80-KiB-of-fields"),  # over _MAX_FRAMING bytes, in one read
        pytest.param(b"a: 1\r\n" * 200, id="200-fields"),  # over _MAX_FIELDS: each field costs far more than its bytes
    ],
)
@synchronously
async def test_a_head_over_its_bounds_is_refused_431_even_when_it_arrives_in_one_read(fields: bytes) -> None:
    """The bound was checked between reads only: a head that came in one read (up to 256 KiB) was parsed whole into
    one (name, value) pair a field, 20,001 of them from 80 KiB, and handled."""
    handled: list[int] = []

    async def handler(request: Request) -> Response:
        handled.append(len(request.headers))
        return await echo(request)

    async with serving(handler) as port:
        raw = await exchange(port, b"GET / HTTP/1.1\r\n" + fields + b"Connection: close\r\n\r\n")
    assert [status for status, _, _ in answers(raw)] == [431]
    assert handled == []


@synchronously
async def test_trailers_over_their_bound_in_one_read_break_the_body() -> None:
    async with serving() as port:
        body = b"3\r\nabc\r\n0\r\n" + b"t: 1\r\n" * 200 + b"\r\n"
        raw = await exchange(port, b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body + CLOSE)
    got = answers(raw)
    assert [status for status, _, _ in got] == [400]
    assert got[0][2] == b"bad: request head or trailer over 65536 bytes or 128 fields"


@synchronously
async def test_requests_pipelined_in_one_read_are_queued_up_to_a_bound() -> None:
    """Reading stops three requests ahead, but everything one read brought in was parsed: 18 bytes of request line
    became a queued request (7,000 from 128 KiB), held for as long as the client does not read its answers."""
    gate = asyncio.Event()
    handled: list[str] = []

    async def handler(request: Request) -> Response:
        await gate.wait()
        handled.append(request.target)
        return Response(200, [], b"ok")

    server = HttpServer(handler, 1024)
    listener = await server.listen("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.sockets[0].getsockname()[1])
        writer.write(b"GET / HTTP/1.1\r\n\r\n" * 1000)  # 18 KB: one read
        await writer.drain()
        await asyncio.sleep(0.2)
        (connection,) = server.connections
        assert len(connection._queue) <= 32  # aiohttp's bound on the messages it queued (guard/server.py)
        gate.set()
        raw = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
    finally:
        await server.shutdown(listener, timeout=1)
    got = answers(raw)
    assert len(handled) == 32
    assert [status for status, _, _ in got] == [200] * 32 + [429]


@synchronously
async def test_an_answer_returned_after_a_stream_went_out_is_not_written_as_another_answer() -> None:
    """The guard returns an error answer when its upstream fails or times out mid-stream (a client that stops reading
    holds the stream until the timeout): written after the stream, it was read as the answer to the next request."""

    async def handler(request: Request) -> Response | Stream:
        if request.target == "/stream":
            stream = await request.stream(200, [("Content-Type", "text/event-stream")])
            await stream.write(b"data: 1\n\n")
            if request.header("x-end"):
                await stream.end()
            return Response(502, [], b"upstream gone")  # as app.py's except clauses do
        return Response(200, [], b"second")

    async with serving(handler) as port:
        raw = await exchange(port, b"GET /stream HTTP/1.1\r\nX-End: 1\r\n\r\n" + CLOSE)
        assert [(status, body) for status, _, body in answers(raw)] == [(200, b"data: 1\n\n"), (200, b"second")]
        raw = await exchange(port, b"GET /stream HTTP/1.1\r\n\r\n" + CLOSE)
        assert raw.endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")  # cut: no last chunk, nothing after it


@synchronously
async def test_an_http_1_0_request_gets_no_100_continue() -> None:
    """RFC 9110 10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request (aiohttp's router does;
    its low-level server, the guard's before, sent no 100 at all). An HTTP/1.0 client knows no interim answers: it
    reads the 100 as its answer, and on a kept-alive connection the real one as the answer to its next request."""
    async with serving() as port:
        raw = await exchange(
            port,
            b"POST /e HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            then=b"hello",
            wait=0.3,  # a client that does not wait for the 100 but sends its body a moment later
        )
    assert b"100 Continue" not in raw
    assert answers(raw)[0][2] == b"POST /e /e 5"


@synchronously
async def test_a_client_that_reads_no_answers_is_closed_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each answer is written whole, then waited on until the client reads it: one that never reads held the answer
    (up to the guard's 64 MiB), its queued requests and the connection for ever. Pipelined requests kept the
    connection from ever looking idle."""
    monkeypatch.setattr(server_module, "_IDLE_SECONDS", 0.3)

    async def big(request: Request) -> Response:
        await request.read()
        return Response(200, [], b"x" * (8 << 20))

    server = HttpServer(big, 1024)
    listener = await server.listen("127.0.0.1", 0)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", listener.sockets[0].getsockname()[1])
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        writer.write(GET * 3)
        for _ in range(40):  # up to 2 s
            await asyncio.sleep(0.05)
            if not server.connections:
                break
        assert not server.connections
        writer.close()
    finally:
        await server.shutdown(listener, timeout=1)


@synchronously
async def test_a_body_that_stops_coming_is_refused_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A head that never ends is closed after the idle time; a body that stopped (a Content-Length never sent whole)
    was waited for as long as the client kept the connection."""
    monkeypatch.setattr(server_module, "_IDLE_SECONDS", 0.3)
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /slow HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly part")
        raw = await asyncio.wait_for(reader.read(-1), 3)
        writer.close()
    got = answers(raw)
    assert [status for status, _, _ in got] == [400]
    assert got[0][2].startswith(b"bad: ")
