"""The guard's upstream client against a scripted server on loopback: what it reads as an answer, what it refuses,
and when it reuses a connection."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from devmlops.guard import upstream
from devmlops.guard.upstream import UpstreamClient, UpstreamError

Script = Callable[[bytes], bytes]  # the request's bytes -> what the server writes back


def synchronously(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@asynccontextmanager
async def server(answer: bytes | Script, *, close_after: bool = False) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server on loopback that writes ``answer`` once a request's head and body arrived; yields its URL and the
    requests it read, one entry a connection (so that a test sees how many connections were opened). A connection
    the client closed is marked by a final b"<closed>" in its entry."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(seen)
        seen.append(b"")
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                seen[index] += request
                writer.write(answer(request) if callable(answer) else answer)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            seen[index] += b"<closed>"
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        listener.close()


@asynccontextmanager
async def client_of(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[UpstreamClient]:
    """A client of a server on loopback that runs ``handler`` on each connection (for what ``server`` cannot
    script: endless heads, a server that reads nothing); both closed at the end."""
    listener = await asyncio.start_server(handler, "127.0.0.1", 0)
    client = UpstreamClient(f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}")
    try:
        yield client
    finally:
        client.close()
        listener.close()


def ok(body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def call(client: UpstreamClient, method: str = "POST", body: bytes = b"{}", limit: int = 1 << 20) -> bytes:
    async with client.request(method, "/v2/models/m/infer?x=1", [("Content-Type", "application/json")], body) as a:
        return await a.read(limit)


@synchronously
async def test_requests_go_over_one_kept_alive_connection_with_host_and_length_set() -> None:
    async with server(ok(b'{"outputs": []}', "Content-Type: application/json")) as (url, seen):
        client = UpstreamClient(url)
        for _ in range(3):
            assert await call(client) == b'{"outputs": []}'
        client.close()
    assert len(seen) == 1, "three requests, one connection"
    first = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert first[0] == b"POST /v2/models/m/infer?x=1 HTTP/1.1"
    assert f"Host: {url[7:]}".encode() in first
    assert b"Content-Length: 2" in first


@synchronously
async def test_headers_status_and_a_chunked_body_are_read_as_sent() -> None:
    head = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n"
    chunked = head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    async with server(chunked) as (url, _):
        client = UpstreamClient(url)
        async with client.request("POST", "/", [], b"") as answer:
            assert (answer.status, answer.header("x-a")) == (201, "2")
            assert [h for h in answer.headers if h[0] == "X-A"] == [("X-A", "1"), ("X-A", "2")]
            assert await answer.read(100) == b"abcde"
        client.close()


@synchronously
async def test_a_body_that_ends_with_the_connection_is_read_to_its_end() -> None:
    async with server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", close_after=True) as (url, seen):
        client = UpstreamClient(url)
        assert await call(client) == b"until the end"
        assert await call(client) == b"until the end"  # the closed connection was not reused
        client.close()
    assert len(seen) == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",  # a chunk cut short
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",  # two lengths: which one frames it?
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"not HTTP at all\r\n\r\n",
        b"",  # nothing before the connection closes
    ],
    ids=["short", "short-chunk", "two-lengths", "upgrade", "garbage", "nothing"],
)
@synchronously
async def test_an_answer_that_is_cut_short_or_malformed_is_an_upstream_error(answer: bytes) -> None:
    await refused(answer, close_after=True)


async def refused(answer: bytes, *, close_after: bool) -> None:
    """``answer`` is an UpstreamError within 5 s (not an answer, not a wait for the timeout)."""
    async with server(answer, close_after=close_after) as (url, _):
        client = UpstreamClient(url)
        with pytest.raises(UpstreamError):
            async with asyncio.timeout(5):
                await call(client)
        client.close()


@synchronously
async def test_a_second_answer_to_one_request_is_never_read_as_the_next_requests() -> None:
    async with server(ok(b"ok") + ok(b"no")) as (url, seen):
        client = UpstreamClient(url)
        assert await call(client) == b"ok"
        assert await call(client) == b"ok"
        client.close()
    assert len(seen) == 2, "the connection that carried a second answer was closed, not reused"


@synchronously
async def test_an_interim_answer_is_skipped_and_the_final_one_read() -> None:
    async with server(b"HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\n" + ok(b"final", "X-Late: 1")) as (url, _):
        client = UpstreamClient(url)
        async with client.request("POST", "/", [], b"x") as answer:
            assert answer.status == 200
            assert answer.header("x-early") == ""
            assert answer.header("x-late") == "1"
            assert await answer.read(100) == b"final"
        client.close()


@synchronously
async def test_an_answer_to_head_has_no_body_whatever_its_length_says() -> None:
    async with server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n") as (url, _):
        client = UpstreamClient(url)
        async with asyncio.timeout(5):
            assert await call(client, "HEAD", b"") == b""
        client.close()


@synchronously
async def test_read_stops_after_one_byte_over_the_limit_and_the_next_answer_is_its_own() -> None:
    async with server(ok(b"x" * 5000)) as (url, _):
        client = UpstreamClient(url)
        assert await call(client, limit=100) == b"x" * 101
        assert await call(client) == b"x" * 5000
        client.close()


@synchronously
async def test_an_answer_left_unread_past_the_buffer_does_not_stall_the_next_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The whole answer arrives in one read, above the buffer at which the connection stops reading, and the reader
    # takes 101 bytes: a connection pooled so would never deliver the next answer.
    monkeypatch.setattr(upstream, "_HIGH_WATER", 1000)
    chunk = b"3e8\r\n" + b"y" * 1000 + b"\r\n"  # five chunks of 1,000 bytes, each its own piece of the buffer
    async with server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 5 + b"0\r\n\r\n") as (url, _):
        client = UpstreamClient(url)
        async with client.request("GET", "/", [], b"") as answer:
            async with asyncio.timeout(5):
                while not answer.complete:
                    await asyncio.sleep(0.01)
            assert await answer.read(100) == b"y" * 101
        async with asyncio.timeout(5):
            assert await call(client) == b"y" * 5000
        client.close()


@synchronously
async def test_a_large_answer_streams_through_in_chunks() -> None:
    body = bytes(range(256)) * 16384  # 4 MiB: above the buffer at which the connection stops reading
    async with server(ok(body)) as (url, _):
        client = UpstreamClient(url)
        async with client.request("GET", "/", [], b"") as answer:
            parts = [chunk async for chunk in answer.chunks()]
        client.close()
    assert b"".join(parts) == body
    assert len(parts) > 1


@pytest.mark.parametrize("where", ["value", "target"])
@synchronously
async def test_a_control_character_never_reaches_the_request_head(where: str) -> None:
    async with server(ok(b"")) as (url, seen):
        client = UpstreamClient(url)
        headers = [("X-A", "a\r\nX-Injected: 1")] if where == "value" else []
        target = "/\r\nX-Injected: 1" if where == "target" else "/"
        with pytest.raises(UpstreamError, match="control character"):
            async with client.request("POST", target, headers, b""):
                pass
        client.close()
    assert seen == []


@synchronously
async def test_a_tab_in_a_header_value_is_sent_as_written() -> None:
    async with server(ok(b"")) as (url, seen):  # HTTP field values may hold tabs (RFC 9110 5.5); CR and LF never
        client = UpstreamClient(url)
        async with client.request("POST", "/", [("X-A", "a\tb")], b""):
            pass
        client.close()
    assert b"\r\nX-A: a\tb\r\n" in seen[0]


@synchronously
async def test_a_server_that_is_not_there_is_an_upstream_error() -> None:
    async with server(b"") as (url, _):
        pass  # closed again: nothing listens on its port now
    with pytest.raises(UpstreamError, match="cannot connect"):
        await call(UpstreamClient(url))


@synchronously
async def test_a_cancelled_request_closes_its_connection() -> None:
    async with server(lambda _request: b"") as (url, seen):  # never answers
        client = UpstreamClient(url)
        task = asyncio.ensure_future(call(client))
        await asyncio.sleep(0.2)
        assert len(seen) == 1
        assert seen[0].startswith(b"POST")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(5):
            while not seen[0].endswith(b"<closed>"):
                await asyncio.sleep(0.02)
        client.close()


def test_only_http_and_https_upstreams_are_accepted() -> None:
    for bad in ("ftp://h:1", "127.0.0.1:8080", "http://"):
        with pytest.raises(ValueError, match="expected http"):
            UpstreamClient(bad)


# Review of 248903c..019fdf0 (the hand-written client): each test below fails on 019fdf0.


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 000 X\r\nContent-Length: 3\r\n\r\nabc" + ok(b"ok"),  # status 0: was read as an interim answer
        b"HTTP/1.1 150 X\r\nContent-Length: 3\r\n\r\nabc" + ok(b"ok"),  # an interim answer with a body
    ],
    ids=["status-0", "interim-with-body"],
)
@synchronously
async def test_no_bytes_of_an_interim_or_statusless_answer_are_read_as_the_final_answers_body(answer: bytes) -> None:
    # On 019fdf0 both read as a 200 whose body is b"abcok": bytes the server framed as another message's.
    await refused(answer, close_after=False)


@synchronously
async def test_an_endless_answer_head_is_an_upstream_error_not_unbounded_memory() -> None:
    # llhttp sets no bound on a header; httptools gathers a value across reads. aiohttp's client refused a field over
    # 8,190 bytes; on 019fdf0 the guard buffered 8 MiB of one header (and would go on until its timeout).
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        try:
            for _ in range(128):
                writer.write(b"a" * 65536)
                await writer.drain()
            await asyncio.sleep(10)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with client_of(endless) as client:
        with pytest.raises(UpstreamError, match="head"):
            async with asyncio.timeout(5):
                await call(client)


@synchronously
async def test_trailer_fields_are_not_read_as_header_fields() -> None:
    # aiohttp's client dropped trailers; on 019fdf0 they were appended to the headers the guard passes on.
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    async with server(chunked + b"2\r\n{}\r\n0\r\nContent-Type: text/html\r\nSet-Cookie: a=b\r\n\r\n") as (url, _):
        client = UpstreamClient(url)
        async with client.request("GET", "/", [], b"") as answer:
            assert await answer.read(100) == b"{}"
            assert answer.complete
            assert answer.header("content-type") == "application/json"
            assert answer.header("set-cookie") == ""
        client.close()


@synchronously
async def test_a_connection_given_up_is_released_even_when_the_server_reads_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The request is written whole into the transport (no drain); transport.close() waits for that buffer to flush,
    # so against a model server that stopped reading, a timed-out request kept its socket and up to 64 MiB of body
    # forever (aiohttp's client drained as it wrote: at most its high-water mark was left).
    lost: list[Exception | None] = []

    class Recording(upstream._Connection):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(exc)
            super().connection_lost(exc)

    monkeypatch.setattr(upstream, "_Connection", Recording)
    stuck = asyncio.Event()

    async def reads_nothing(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await stuck.wait()
        finally:
            writer.close()

    async with client_of(reads_nothing) as client:
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await call(client, body=b"x" * (32 << 20))
            async with asyncio.timeout(5):
                while not lost:
                    await asyncio.sleep(0.02)
        finally:
            stuck.set()
    await asyncio.sleep(0.1)  # the handler closes its end


@synchronously
async def test_a_request_line_the_guard_did_not_parse_is_never_sent() -> None:
    # aiohttp parses CONNECT's authority-form target ("CONNECT 127.0.0.1:22"); its rel_url.raw_path_qs is "", and
    # 019fdf0 sent "CONNECT  HTTP/1.1", a request line nobody parsed, which a lenient server reads as it likes.
    async with server(ok(b"")) as (url, seen):
        client = UpstreamClient(url)
        for target in ("", "127.0.0.1:22", "http://elsewhere/"):
            with pytest.raises(UpstreamError, match="target"):
                async with client.request("CONNECT", target, [], b""):
                    pass
        async with client.request("OPTIONS", "*", [], b"") as answer:  # the asterisk form stays
            assert answer.status == 200
        client.close()
    assert len(seen) == 1
    assert seen[0].startswith(b"OPTIONS * HTTP/1.1\r\n")


@synchronously
async def test_requests_in_flight_to_one_upstream_are_bounded() -> None:
    # aiohttp's connector opened at most 100 connections and queued the rest; on 019fdf0 every request the guard
    # admitted opened its own, so a model server that stopped answering was sent as many as clients had waiting.
    async with server(lambda _request: b"") as (url, seen):  # never answers
        client = UpstreamClient(url)
        tasks = [asyncio.ensure_future(call(client)) for _ in range(upstream._MAX_OPEN + 20)]
        await asyncio.sleep(1)
        opened = len(seen)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client.close()
    assert opened == upstream._MAX_OPEN


@synchronously
async def test_every_request_gives_its_slot_back_whether_it_succeeded_or_failed() -> None:
    async with server(ok(b"ok")) as (url, _), server(b"garbage\r\n\r\n", close_after=True) as (bad, _):
        client, failing = UpstreamClient(url), UpstreamClient(bad)
        async with asyncio.timeout(20):
            for _ in range(upstream._MAX_OPEN + 1):
                assert await call(client) == b"ok"
                with pytest.raises(UpstreamError):
                    await call(failing)
        client.close()
        failing.close()


@synchronously
async def test_a_connection_whose_request_was_not_yet_sent_whole_is_not_reused() -> None:
    # A server that answers before it read the body (and keeps the connection) has not consumed the rest of the
    # request, which the client still sends: on 019fdf0 the next request went out behind it on the same connection,
    # to be read by that server as whatever the unread bytes make of it (here: never answered).
    opened: list[int] = []

    async def answers_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ok(b"early"))
            while await reader.read(1 << 20):  # what follows is never read as a request on this connection
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with client_of(answers_early) as client, asyncio.timeout(5):
        assert await call(client, body=b"x" * (32 << 20)) == b"early"
        assert await call(client) == b"early"
    await asyncio.sleep(0.1)  # the handlers see the end and close theirs
    assert len(opened) == 2
