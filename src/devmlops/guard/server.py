"""The guard's HTTP/1.1 server: requests parsed by httptools (llhttp, the parser the webhook and the guard's upstream
client use), handed to one handler in arrival order on each connection, answered whole or as a chunked stream.

Chosen on measurement over aiohttp's server, whose request and response objects, router-free as they were, took about
two fifths of the guard's CPU a request (docs/benchmarks.md). The guard needs only what a reverse proxy in a Pod
needs: keep-alive, pipelined requests answered in order, bodies bounded while they arrive, ``Expect: 100-continue``,
and a streamed answer with backpressure. What it does not serve it refuses: a request the parser cannot read, a
head over ``_MAX_FRAMING`` bytes or ``_MAX_FIELDS`` fields, or more than ``_MAX_PIPELINED`` requests sent ahead of their
answers, is answered 400, 431 or 429 and its connection closed. A connection whose request body was
not read whole (over the limit, or refused before it was read) is closed after its answer, never read as the next
request. The handler catches its own errors; one that escapes is a 500 and a closed connection.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

__all__ = ["BadRequest", "HttpServer", "Request", "Response", "Stream", "per_second"]

_MAX_FRAMING = 65536  # bytes of heads, trailers and chunk lines in a row (no body between): llhttp bounds none
_IDLE_SECONDS = 75.0  # a connection with no request (or an unfinished head) this long after its last answer closes,
# and one whose client read none of an answer, or sent none of a body the guard waits for, this long
_LINGER_SECONDS = 2.0  # after the last answer on a connection closed early, what the client still sends is read
_LINGER_BYTES = 64 << 20  # and dropped, for at most this long or this much, so that its answer is not lost to a reset
_QUEUED = 2  # requests read ahead of the one being answered (pipelining) before the connection stops reading
# Reading stops between reads, but one read (up to 256 KiB) is parsed whole: within it, the bounds are kept as it is
# parsed. A field is a (name, value) pair of strings, some 150 bytes for 4 on the wire, and a queued request some 400
# for 18: aiohttp's own bounds (128 fields, 32 queued requests), which the guard served with before.
_MAX_FIELDS = 128  # header fields of a head, or trailer fields of a body
_MAX_PIPELINED = 32  # requests queued on a connection; the next one is refused 429 and the connection closed
_NO_BODY = frozenset({204, 304})


class BadRequest(Exception):
    """The request's body could not be read: its framing broke (``read`` raises this; the connection closes)."""


class _Refused(Exception):
    """Raised in a parser callback to stop the parser (llhttp cannot resume after it): what came is over a bound."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Response:
    """A whole answer: the server adds Content-Length (none for 1xx, 204 and 304), Date and, when it will close the
    connection, ``Connection: close``."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


class Request:
    """One request: its line and headers as received, its body read on demand (``read``)."""

    __slots__ = (
        "_chunks",
        "_connection",
        "_continue",
        "_size",
        "_stream",
        "_waiter",
        "complete",
        "error",
        "headers",
        "keep_alive",
        "method",
        "overflow",
        "path",
        "remote",
        "target",
        "version",
    )  # fmt: skip

    def __init__(self, connection: _Connection, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.target = target  # the path and query as received (percent-encoded), no fragment: what goes upstream
        path = target.partition("?")[0]
        self.path = unquote(path) if "%" in path else path  # as the model server's framework routes it (uvicorn's)
        self.headers = headers
        self.remote = connection.remote
        self.keep_alive = True
        self.version = "1.1"
        self._connection = connection
        self._chunks: list[bytes] = []
        self._size = 0
        self.complete = False  # the whole body arrived
        self.overflow = False  # the body went over the server's limit: what follows is dropped
        self.error = ""  # why the body's framing broke (``read`` raises BadRequest)
        self._continue = False  # the client waits for "100 Continue" before it sends the body
        self._waiter: asyncio.Future[None] | None = None
        self._stream: Stream | None = None  # the answer, once it started as a stream: nothing else is written

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length")
        return int(value) if value is not None and value.isdigit() else None

    async def read(self) -> bytes | None:
        """The whole body, or None when it went over the server's body limit (counted as it arrived)."""
        if self._continue and not self.complete and not self.overflow:
            self._continue = False
            self._connection.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not (self.complete or self.overflow):
            if self.error:
                raise BadRequest(self.error)
            if self._connection.closed:
                raise ConnectionResetError("the client closed the connection before the body was complete")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.overflow:
            return None
        body = b"".join(self._chunks)
        self._chunks = [body]
        return body

    async def stream(self, status: int, headers: list[tuple[str, str]]) -> Stream:
        """Start a streamed answer: chunked for HTTP/1.1, delimited by the connection's end for HTTP/1.0."""
        chunked = self.version != "1.0"
        framing = [("Transfer-Encoding", "chunked")] if chunked else []
        self._connection.write(self._connection.head(self, status, headers + framing, close=not chunked))
        if not chunked:
            self.keep_alive = False
        self._stream = Stream(self._connection, chunked, self.method == "HEAD")
        return self._stream

    def _body(self, data: bytes, limit: int) -> None:
        if self.overflow:
            return
        self._size += len(data)
        if self._size > limit:
            self.overflow = True
            self._chunks = []
        else:
            self._chunks.append(data)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Stream:
    """A streamed answer's body: ``write`` each part (waiting while the client reads slower than it comes), then
    ``end``."""

    def __init__(self, connection: _Connection, chunked: bool, head_only: bool) -> None:
        self._connection, self._chunked, self._head_only = connection, chunked, head_only
        self.ended = False

    async def write(self, data: bytes) -> None:
        if not data or self._head_only:  # an empty chunk would end a chunked body
            return
        if self._connection.closed:
            raise ConnectionResetError("the client closed the connection")
        self._connection.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        await self._connection.drain()

    async def end(self) -> None:
        if not self.ended:
            self.ended = True
            if self._chunked and not self._head_only:
                self._connection.write(b"0\r\n\r\n")
            await self._connection.drain()


Handler = Callable[[Request], Awaitable[Response | Stream]]
Refused = Callable[[str, int, str], None]  # (the client's address, status, why): a head answered without the handler


class HttpServer:
    """``loop.create_server(server, host, port)``: one ``_Connection`` a client connection, every request handed to
    ``handler``. ``max_body``: the most body bytes buffered for a request (the rest is dropped and ``read`` answers
    None). ``refused`` hears of each head the server answers itself (the parser refused it), before its answer goes
    out: the guard audits those too."""

    def __init__(self, handler: Handler, max_body: int, refused: Refused | None = None) -> None:
        self.handler = handler
        self.max_body = max_body
        self.refused = refused
        self.connections: set[_Connection] = set()

    def __call__(self) -> _Connection:
        return _Connection(self)

    async def listen(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(self, host, port, backlog=1024)

    async def shutdown(self, listener: asyncio.Server, timeout: float = 10.0) -> None:
        """Stop accepting, close idle connections, let requests in flight finish for up to ``timeout`` seconds."""
        listener.close()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            for connection in list(self.connections):
                if connection.idle():
                    connection.close()
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self.remote = ""
        self.closed = False
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._incoming: Request | None = None  # the request whose head or body is arriving
        self._queue: deque[Request] = deque()  # requests to answer, in order
        self._worker: asyncio.Task[None] | None = None
        self._broken: Response | None = None  # the answer to a head the parser refused: sent after those before
        self._stopped = False  # the parser refused what came: nothing more is read
        self._lingering = -1  # bytes still dropped after the last answer (close_soon), or -1
        self._framing = 0
        self._head_size = 0  # bytes of the head (or trailer) being parsed, counted as the parser hands them over
        self._fields = 0
        self._in_head = False
        self._got_body = False
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0  # when the last answer went out (the loop's clock)
        self._last_data = 0.0  # when the client last sent anything

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._server.connections.add(self)
        self._idle_since = asyncio.get_running_loop().time()
        self._arm_idle(_IDLE_SECONDS)

    def data_received(self, data: bytes) -> None:
        self._last_data = asyncio.get_running_loop().time()
        if self._lingering >= 0:
            self._lingering -= len(data)
            if self._lingering < 0:
                self.close()
            return
        if self._stopped:
            return
        self._got_body = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A request to switch protocols (its Upgrade header is never forwarded): answered as a plain request,
            # then the connection closes, since what follows is not HTTP.
            if self._queue:
                self._queue[-1].keep_alive = False
            self._stopped = True
            self._pause()
        except httptools.HttpParserError as exc:
            refused = exc.__context__  # a callback's exception: a bound went over
            if isinstance(refused, _Refused):
                self._refuse(refused.status, str(refused))
            else:
                self._refuse(400, f"malformed request ({exc})")
            return
        # Heads, chunk lines and trailers in a row, which httptools would gather whole: bounded. Between requests
        # (the last one read whole, no head begun) nothing is pending.
        between = self._incoming is None and not self._in_head
        self._framing = 0 if self._got_body or between else self._framing + len(data)
        if self._framing > _MAX_FRAMING:
            self._refuse(431, f"request head, chunk line or trailer over {_MAX_FRAMING} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for request in self._queue:
            request._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if len(self._queue) >= _MAX_PIPELINED:
            raise _Refused(429, f"over {_MAX_PIPELINED} requests sent ahead of their answers")
        self._in_head = True
        self._url = b""
        self._headers = []
        self._head_size = self._fields = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url), 0)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, 1)
        if self._incoming is not None:  # a trailer field: not passed on
            return
        self._headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = Request(self, parser.get_method().decode("latin-1"), _target(self._url), self._headers)
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        # An HTTP/1.0 client knows no interim answer: it would read the 100 as its answer (RFC 9110 10.1.1).
        request._continue = request.version == "1.1" and any(
            k.lower() == "expect" and v.lower() == "100-continue" for k, v in self._headers
        )
        self._incoming = request
        self._in_head = False
        self._framing = self._head_size = self._fields = 0  # trailers, if any, are counted afresh
        self._queue.append(request)
        if len(self._queue) > _QUEUED:
            self._pause()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    def on_body(self, body: bytes) -> None:
        self._got_body = True
        if self._incoming is not None:
            self._incoming._body(body, self._server.max_body)

    def on_message_complete(self) -> None:
        request = self._incoming
        if request is not None:
            request.complete = True
            request._wake()
        self._incoming = None

    def _count(self, size: int, fields: int) -> None:
        self._head_size += size
        self._fields += fields
        if self._head_size > _MAX_FRAMING or self._fields > _MAX_FIELDS:
            raise _Refused(431, f"request head or trailer over {_MAX_FRAMING} bytes or {_MAX_FIELDS} fields")

    # answering

    async def _serve(self) -> None:
        """Answer the queued requests in order; then wait for more (the parser starts this again)."""
        try:
            while self._queue and not self.closed:
                request = self._queue[0]
                try:
                    answer = await self._server.handler(request)
                except Exception:
                    answer = Response(500, [("Content-Type", "text/plain")], b"internal error in the guard\n")
                    request.keep_alive = False
                if request._stream is not None:
                    # Its answer went out as a stream: whatever the handler returned after (an error once the upstream
                    # failed or timed out mid-stream) would be read by the client as the next request's answer.
                    if not request._stream.ended:  # its end cannot be told to the client
                        request.keep_alive = False
                elif isinstance(answer, Response):
                    head = self.head(request, answer.status, answer.headers, body=answer.body)
                    if answer.body and request.method != "HEAD" and answer.status not in _NO_BODY:
                        self.write(head + answer.body if len(answer.body) < 65536 else head)  # one send when small
                        if len(answer.body) >= 65536:
                            self.write(answer.body)
                    else:
                        self.write(head)
                else:  # a Stream not started through request.stream(): never framed, nothing was written
                    request.keep_alive = False
                self._queue.popleft()
                if not (request.keep_alive and request.complete) or self.closed:
                    self.close_soon()
                    return
                await self.drain()
                if self._paused and len(self._queue) <= _QUEUED and not self._stopped:
                    self._paused = False
                    if self._transport is not None:
                        self._transport.resume_reading()
            if self._broken is not None and not self.closed:
                if self._server.refused is not None:
                    self._server.refused(self.remote, self._broken.status, self._broken.body.decode().strip())
                self.write(self.head(None, self._broken.status, self._broken.headers, body=self._broken.body))
                self.write(self._broken.body)
                self.close_soon()
        finally:
            self._worker = None
            self._idle_since = asyncio.get_running_loop().time()

    def head(
        self, request: Request | None, status: int, headers: list[tuple[str, str]], *, body: bytes | None = None,
        close: bool = False,
    ) -> bytes:  # fmt: skip
        """The status line and header fields, with Content-Length when ``body`` is given (a whole answer)."""
        if request is not None:
            close = close or not (request.keep_alive and request.complete)
        lines = [f"HTTP/1.1 {status} {_reason(status)}\r\nDate: {_date()}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        if body is not None and status >= 200 and status not in _NO_BODY:
            lines.append(f"Content-Length: {len(body)}\r\n")
        if close:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1", "replace")

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    async def drain(self) -> None:
        """Wait while the client reads slower than answers come. One that reads nothing for ``_IDLE_SECONDS`` is
        closed: it would hold what was written (a whole answer), and what it queued, for ever."""
        if self._writable is not None:
            try:
                async with asyncio.timeout(_IDLE_SECONDS):
                    await asyncio.shield(self._writable)
            except TimeoutError:
                self.close()

    def idle(self) -> bool:
        return not self._queue and self._incoming is None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close_soon(self) -> None:
        """Close once what was written is sent. Closing with the client's bytes unread would reset the connection,
        and the client could lose its answer (a 413 while it still sends the body): so the write side ends first,
        and what still comes is read and dropped for a while (a lingering close)."""
        transport = self._transport
        self.closed = True
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = _LINGER_BYTES
        if self._paused:
            self._paused = False
            transport.resume_reading()
        asyncio.get_running_loop().call_later(_LINGER_SECONDS, self.close)

    def eof_received(self) -> bool:
        """The client will send nothing more: what it asked whole is still answered (a half close), then the
        connection closes."""
        self._stopped = True
        if self._lingering >= 0 or (not self._queue and self._broken is None):
            self.close()
            return False
        last = self._queue[-1]
        last.keep_alive = False
        if last is self._incoming:
            last.error = "the client ended its side before the body was complete"
            last._wake()
        return True

    def _refuse(self, status: int, reason: str) -> None:
        """Stop reading. A request whose body broke learns it from ``read`` (its answer closes the connection); a
        head that broke is answered ``status`` after the requests before it."""
        self._stopped = True
        self._pause()
        request = self._incoming
        if request is not None:
            request.error = reason
            request.keep_alive = False
            request._wake()
            return
        self._broken = Response(status, [("Content-Type", "text/plain")], reason.encode() + b"\n")
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _arm_idle(self, delay: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_out)

    def _idle_out(self) -> None:
        """Close a connection with nothing to answer (idle, or a head that has not come whole) ``_IDLE_SECONDS``
        after its last answer; refuse a body the handler waits for that stopped coming. One timer a connection, moved
        on when it fires early: a timer a request cost a twentieth of the guard's CPU."""
        if self.closed:
            return
        now = asyncio.get_running_loop().time()
        left = self._idle_since + _IDLE_SECONDS - now
        request = self._incoming
        if request is not None and request._waiter is not None and now - self._last_data >= _IDLE_SECONDS:
            # Its handler waits for a body the client stopped sending (not a body behind an unsent 100 Continue, nor
            # one queued behind other requests: no handler waits for those).
            self._refuse(400, f"no body bytes for {_IDLE_SECONDS:g} seconds")
            self._arm_idle(_IDLE_SECONDS)
        elif not self.idle():
            self._arm_idle(_IDLE_SECONDS)
        elif left <= 0:
            self.close()
        else:
            self._arm_idle(left)


def _target(url: bytes) -> str:
    """The request target to pass on: origin form as received without a fragment; an absolute URL's path and query
    (as aiohttp passed them); anything else (CONNECT's authority, ``*``) as it came, which the upstream client refuses
    unless it is ``*``."""
    text = url.decode("utf-8", "surrogateescape")
    if text.startswith("/"):
        return text.partition("#")[0]
    if "://" in text:
        try:
            parts = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            return text
        path = (parts.path or b"/").decode("utf-8", "surrogateescape")
        return path + ("?" + parts.query.decode("utf-8", "surrogateescape") if parts.query else "")
    return text


_REASONS = {status.value: status.phrase for status in HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def per_second(layout: str) -> Callable[[], str]:
    """The wall clock in UTC, to the second, in ``layout`` (strftime): formatted once a second, not on every call."""
    last: list[Any] = [-1, ""]

    def now() -> str:
        second = int(time.time())
        if last[0] != second:
            last[:] = [second, time.strftime(layout, time.gmtime(second))]
        return str(last[1])

    return now


_date = per_second("%a, %d %b %Y %H:%M:%S GMT")  # the Date header's value (RFC 9110 5.6.7)
