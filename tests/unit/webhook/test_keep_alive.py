"""The webhook never closes an idle connection before the API server does: client-go keeps one for 90 s and does not
retry a POST that meets a connection the server just closed ("failed calling webhook: ... EOF", a denial). A real
uvicorn on loopback with the webhook's server options keeps a connection open past uvicorn's default 5 s."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from devmlops.webhook.server import API_SERVER_IDLE_SECONDS, server_options


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def server() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    running = uvicorn.Server(uvicorn.Config(_ok, **server_options()))
    thread = threading.Thread(target=lambda: asyncio.run(running.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "uvicorn did not start within 10 s"
    yield port
    running.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _request(conn: socket.socket) -> bytes:
    """One request and its whole answer (uvicorn may write the head and the body apart); b"" once the server closed
    the connection."""
    conn.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    conn.settimeout(5)
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < 2:  # the body is b"ok"
        chunk = conn.recv(4096)
        if not chunk:
            return answer
        answer += chunk
    return answer


def test_an_idle_connection_outlives_uvicorns_default_keep_alive(server: int) -> None:
    assert server_options()["timeout_keep_alive"] > API_SERVER_IDLE_SECONDS
    with socket.create_connection(("127.0.0.1", server)) as conn:
        assert _request(conn).startswith(b"HTTP/1.1 200")
        time.sleep(6.5)  # uvicorn's default keep-alive (5 s) would have closed it by now
        assert _request(conn).startswith(b"HTTP/1.1 200"), "the webhook closed an idle connection first"
