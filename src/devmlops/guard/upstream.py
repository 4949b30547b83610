"""The guard's client for the servers it forwards to: its model server on the Pod's loopback and, in a rollout, the
canary's guard. Keep-alive HTTP/1.1 connections, answers parsed by httptools (llhttp, the parser the webhook serves
with), idle connections kept per upstream.

Chosen on measurement over aiohttp's client, which took about three times the CPU a request (docs/benchmarks.md):
the guard makes one request for each it serves, to one or two fixed servers, and needs none of a general client's
features (cookies, redirects, proxies, decompression: the guard never follows a redirect nor decodes an answer).
Anything unexpected on the wire is an ``UpstreamError`` (the guard answers 502). A connection goes back to the pool
only after an answer read whole from a server that keeps it alive; any other end closes it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Answer", "UpstreamClient", "UpstreamError"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")  # no control character (CR and LF above all) may reach a request's head
_UNSAFE_FIELD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # the same but a tab, which a field value may hold
_HIGH_WATER = 1 << 20  # bytes of an answer buffered before the connection stops reading (a slow reader)
_IDLE_SECONDS = 2.0  # an idle connection older than this is closed, not reused: servers close idle ones (uvicorn: 5 s)
_MAX_IDLE = 256  # idle connections kept per upstream
_MAX_OPEN = 100  # requests in flight per upstream (aiohttp's connector's default); the rest wait their turn
_MAX_FRAMING = 65536  # bytes of heads, trailers and chunk lines in a row (no body between): llhttp bounds none


class UpstreamError(Exception):
    """The upstream could not be reached, or its answer was malformed or cut short."""


class Answer:
    """One answer: its status and headers once they arrived, then its body, read whole or chunk by chunk."""

    def __init__(self, connection: _Connection, head_only: bool) -> None:
        self._connection = connection
        self.head_only = head_only  # an answer to HEAD: no body, whatever its Content-Length says
        self.status = 0  # set when the headers are complete
        self.headers: list[tuple[str, str]] = []
        self.delimited = False  # a Content-Length or chunked body, which must arrive whole (else: read to the end)
        self.complete = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def header(self, name: str) -> str:
        """The last value of header ``name`` (any case), or ''."""
        name = name.lower()
        return next((value for key, value in reversed(self.headers) if key.lower() == name), "")

    async def read(self, limit: int) -> bytes:
        """The whole body, or its first ``limit + 1`` bytes when it is longer (the caller refuses it)."""
        parts, size = [], 0
        while size <= limit:
            chunk = await self._next()
            if chunk is None:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[: limit + 1]

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while (chunk := await self._next()) is not None:
            yield chunk

    async def _headers(self) -> None:
        while not self.status:
            await self._wait()

    async def _next(self) -> bytes | None:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _HIGH_WATER:
                    self._connection.resume()
                return chunk
            if self.complete:
                return None
            await self._wait()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= _HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self.complete:
            self._error = error
        self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one answer at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: Answer | None = None
        self.paused = False  # reading stopped for a slow reader: never reused so (the next answer would not arrive)
        self.closed = False
        self.reusable = False  # the last answer was read whole and the server keeps the connection alive
        self.idle_since = 0.0
        self._framing = 0  # bytes read since the last body bytes (heads, trailers, chunk lines): at most _MAX_FRAMING
        self._got_body = False

    def send(self, head: bytes, body: bytes, head_only: bool) -> Answer:
        assert self._transport is not None
        self.reusable = False
        self._answer = Answer(self, head_only)
        self._framing = 0
        self._transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self._transport.write(body)
        return self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:  # abort, not close: close waits to flush what the server may never read
            self._transport.abort()

    def pause(self) -> None:
        if not self.paused and self._transport is not None:
            self.paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self._transport is not None and not self.closed:
            self.paused = False
            self._transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # bytes nobody asked for: the connection cannot be trusted to frame the next answer
            self.close()
            return
        self._got_body = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._failed(UpstreamError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._failed(UpstreamError(f"malformed answer ({exc})"))
        self._framing = 0 if self._got_body else self._framing + len(data)
        if self._framing > _MAX_FRAMING:  # an endless head or trailer, which httptools would gather whole
            self._failed(UpstreamError(f"answer head, trailer or chunk line over {_MAX_FRAMING} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is None or answer.complete:
            return
        # A body that ends with the connection has ended, unless an error (ours: we closed it) came first.
        if answer.status and not answer.delimited and exc is None and answer._error is None:
            answer.complete = True
            answer._wake()
        else:
            answer._fail(UpstreamError("the connection closed before the answer was complete"))

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.complete:  # a second answer to one request: never read as this one's
            raise UpstreamError("more than one answer to a request")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._answer is not None
        if self._answer.status:  # a trailer field: never passed on as a header field
            return
        key = name.decode("latin-1")
        if key.lower() in ("content-length", "transfer-encoding"):
            self._answer.delimited = True
        self._answer.headers.append((key, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        answer = self._answer
        assert answer is not None
        status = self._parser.get_status_code()
        if status < 100:  # llhttp reads any three digits; 0 would pass for an interim answer
            raise UpstreamError(f"status {status}")
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            answer.headers.clear()
            answer.delimited = False
            if status == 101:
                raise UpstreamError("the server switched protocols")
            return
        answer.status = status
        if answer.head_only:  # no body follows, whatever the headers say; the parser cannot know: do not reuse
            answer.complete = True
            self.close()
        answer._wake()

    def on_body(self, body: bytes) -> None:
        assert self._answer is not None
        self._got_body = True
        if not self._answer.status:  # llhttp reads a body framed for an interim answer (other than 100-103)
            raise UpstreamError("an interim answer with a body")
        if not self._answer.complete:  # an answer to HEAD ended with its headers
            self._answer._body(body)

    def on_message_complete(self) -> None:
        answer = self._answer
        assert answer is not None
        if not answer.status:  # the end of an interim answer
            return
        answer.complete = True
        # An answer that came before the request was written whole: the server did not read all of it, and the next
        # request would go out behind the rest.
        written = self._transport is not None and not self._transport.get_write_buffer_size()
        self.reusable = self._parser.should_keep_alive() and not self.closed and written
        answer._wake()

    def _failed(self, error: UpstreamError) -> None:
        if self._answer is not None:
            self._answer._fail(error)
        self.close()


class _Call:
    """``async with client.request(...) as answer``: the connection goes back to the pool only when the answer was
    read whole; an error, a cancellation or an unread body closes it."""

    def __init__(self, client: UpstreamClient, method: str, target: str, headers: list[tuple[str, str]], body: bytes):
        self._client, self._method, self._target, self._headers, self._body = client, method, target, headers, body
        self._connection: _Connection | None = None

    async def __aenter__(self) -> Answer:
        head = self._client.head(self._method, self._target, self._headers, len(self._body))
        slots = self._client.slots
        await slots.acquire()
        try:
            connection = await self._client.connection()
        except BaseException:
            slots.release()
            raise
        try:
            answer = connection.send(head, self._body, self._method == "HEAD")
            await answer._headers()
        except BaseException:  # __aexit__ does not run when __aenter__ fails: never leave the connection open
            connection.close()
            slots.release()
            raise
        self._connection = connection
        return answer

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        connection = self._connection
        if connection is None:
            return
        if kind is None and connection.reusable and not connection.closed and not connection.paused:
            self._client.release(connection)
        else:
            connection.close()
        self._client.slots.release()


class UpstreamClient:
    """Requests to one upstream (``http://host:port`` or ``https://``), over pooled keep-alive connections."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream {base_url!r}: expected http://host:port or https://host:port")
        secure = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if secure else 80)
        self._ssl = ssl.create_default_context() if secure else None
        self._host_header = parts.netloc.rpartition("@")[2]
        self._idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(_MAX_OPEN)  # a slot for each request in flight

    def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> _Call:
        """``target`` is the request's path and query as received; ``headers`` go as given (no Host, no framing)."""
        return _Call(self, method, target, headers, body)

    def head(self, method: str, target: str, headers: list[tuple[str, str]], length: int) -> bytes:
        fields = [f"{name}: {value}\r\n" for name, value in headers]
        if _UNSAFE.search(method + target) or any(_UNSAFE_FIELD.search(field, 0, len(field) - 2) for field in fields):
            raise UpstreamError("a control character in the request line or a header")
        if not target.startswith("/") and target != "*":  # CONNECT's authority form came through as ""
            raise UpstreamError(f"request target {target!r}: only a path or *")
        start = f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\nContent-Length: {length}\r\n"
        return (start + "".join(fields) + "\r\n").encode("utf-8", "surrogateescape")

    async def connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the most recently used first: the least likely to be closed by now
            if not connection.closed and now - connection.idle_since < _IDLE_SECONDS:
                return connection
            connection.close()
        try:
            _, protocol = await asyncio.get_running_loop().create_connection(
                _Connection, self._host, self._port, ssl=self._ssl
            )
        except OSError as exc:
            raise UpstreamError(f"cannot connect ({type(exc).__name__})") from exc
        return protocol

    def release(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        while len(self._idle) > _MAX_IDLE:
            self._idle.popleft().close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
