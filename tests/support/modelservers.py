"""Real servers for the guard's tests, on loopback: MLServer (Seldon's v2 server that KServe's sklearn runtime
runs) from PyPI in its own virtual environment, cached outside the repository, serving a scikit-learn model trained
here on a dataset scikit-learn ships; an OpenAI-compatible chat server written for the tests, which records
every request it receives (so a test can show what never reached the model) and answers or streams a scripted
completion; and a v2 server whose answers fail at a chosen rate (a model version that errors, for rollouts)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from devmlops.harness.processes import ManagedProcess, free_port, http_ok
from devmlops.harness.toolcache import cache_root

MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1")  # as in the model-server image (harness/pyimages.py)
_TRAIN = """
import json, sys, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=500).fit(x, y), sys.argv[1] + "/model.joblib")
settings = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1"}}
open(sys.argv[1] + "/model-settings.json", "w").write(json.dumps(settings))
"""


def mlserver_venv() -> Path:
    """``~/.cache/devmlops/mlserver-1.7.1`` (or under $DEVMLOPS_CACHE), made once with pip from PyPI."""
    venv = cache_root() / ("mlserver-" + MLSERVER[0].split("==")[1])
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *MLSERVER], check=True, timeout=900)
        (venv / ".complete").write_text("ok\n")
    return venv


# A custom MLServer model that reads its inputs the way MLServer's own runtimes do (self.decode: the codec the
# request's or the model's content type names) and answers what it read: what a prompt becomes inside the server.
ECHO_MODEL = {
    "model-settings.json": json.dumps({"name": "echo", "implementation": "echo.Echo"}),
    "echo.py": """
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Echo(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        read = []
        for request_input in payload.inputs:
            for item in self.decode(request_input, default_codec=StringCodec):
                read.append(item.decode() if isinstance(item, bytes) else str(item))
        return InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output("read", read)])
""",
}


@contextmanager
def mlserver(
    workdir: Path, *, env: Mapping[str, str] | None = None, model: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A running MLServer on 127.0.0.1 (``env``: MLSERVER_* settings over the defaults here, free ports on loopback)
    with the model "iris", or with ``model``'s files (their model-settings.json names it); yields its base URL."""
    venv = mlserver_venv()
    name = json.loads(model["model-settings.json"])["name"] if model else "iris"
    models = workdir / "models" / name
    models.mkdir(parents=True, exist_ok=True)
    if model is None:
        subprocess.run([str(venv / "bin" / "python"), "-c", _TRAIN, str(models)], check=True, timeout=300)
    for file, text in (model or {}).items():
        (models / file).write_text(text)
    settings = {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(free_port()),
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
        "MLSERVER_PARALLEL_WORKERS": "0",
        **(env or {}),
    }
    environment = {**os.environ, **settings}
    environment.pop("PYTHONPATH", None)  # its own environment, not the test's
    process = ManagedProcess(
        "mlserver", [str(venv / "bin" / "mlserver"), "start", str(workdir / "models")],
        log_path=workdir / "mlserver.log", env=environment, cwd=workdir,
    )  # fmt: skip
    url = f"http://127.0.0.1:{settings['MLSERVER_HTTP_PORT']}"
    process.start()
    try:
        process.wait_until(lambda: http_ok(url + f"/v2/models/{name}/ready"), timeout=120, what=f"model {name} ready")
        yield url
    finally:
        process.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with Nagle off (headers and body go out in two writes: without it, a delayed ACK stalls each answer
    40 ms), quiet, and one way to answer."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *_args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer:
    """A threaded server on a free 127.0.0.1 port at ``url`` while in its ``with`` block."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class ChatServer(LoopbackServer):
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers ``reply`` (whole, or as server-sent
    events word by word when the request asks to stream) and keeps every request body it received. At Triton's
    generate extension (``/v2/models/<m>/generate``, ``generate_stream``) it answers in Triton's shape instead:
    ``{"model_name", "model_version", "text_output"}``, whole or one event per word; at ``/invocations`` as an MLflow
    scoring server, ``{"predictions": [reply]}``."""

    def __init__(self) -> None:
        self.reply = "Hello there."
        self.status = 200  # the status of whole (not streamed) answers: 500 plays a failing model server
        self.pieces: list[str] = []  # set: a generate stream sends exactly these texts, one event each
        self.tool_arguments = ""  # set: whole chat answers call a tool with these arguments instead of saying reply
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self._send(200, b'{"status":"ok"}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with outer._lock:
                    outer.received.append(body)
                if self.path.endswith(("/generate", "/generate_stream")):
                    self._generate(self.path.endswith("_stream"), body.get("id"))
                    return
                if self.path == "/invocations":  # an MLflow scoring server's answer (MLServer's MLflow runtime)
                    self._send(200, json.dumps({"predictions": [outer.reply]}).encode())
                    return
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for word in outer.reply.split(" "):
                        event = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
                        self._chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                    return
                answer = {"object": "chat.completion", "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": outer.reply}}]}  # fmt: skip
                if outer.tool_arguments:
                    call = {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "send", "arguments": outer.tool_arguments},
                    }
                    answer["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
                self._send(outer.status, json.dumps(answer).encode(), "application/json")

            def _generate(self, stream: bool, request_id: Any) -> None:
                def answer(text: str) -> bytes:
                    fields = {"model_name": "m", "model_version": "1", "text_output": text}
                    return json.dumps({**fields, **({"id": request_id} if request_id else {})}).encode()

                if not stream:
                    self._send(200, answer(outer.reply))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in outer.pieces or [word + " " for word in outer.reply.split(" ")]:
                    self._chunk(b"data: " + answer(piece) + b"\n\n")
                self._chunk(b"")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        self._serve(Handler)

    def prompts(self) -> list[str]:
        with self._lock:
            return [str(m.get("content")) for body in self.received for m in body.get("messages") or []]


class V2Server(LoopbackServer):
    """The Open Inference Protocol (v2) on 127.0.0.1: health answers 200; every ``fail_every``-th inference request
    (0: none) answers 500, the others a fixed prediction. ``served`` counts inference requests."""

    def __init__(self, fail_every: int = 0) -> None:
        self.served = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self._send(200, b"{}")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.served += 1
                    failing = fail_every > 0 and outer.served % fail_every == 0
                if failing:
                    self._send(500, b'{"error":"the model raised"}')
                    return
                outputs = [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [1]}]
                self._send(200, json.dumps({"model_name": "m", "outputs": outputs}).encode())

        self._serve(Handler)
