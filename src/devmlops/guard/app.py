"""The serving guard: a reverse proxy in front of one model server, in the model server's Pod.

Every request passes the rate limits (all clients, then the client's own bucket), the size limit (counted while
reading, never trusting Content-Length alone), the endpoint's schema and the input checks, and only then reaches the
model server, which listens on the Pod's loopback (core/render.py), or, for a rollout's share of the inference
requests (``Split``), the canary's guard. Answers pass the output checks; token streams (server-sent events) are
checked event by event and cut off at a hit. One audit line per request, refused ones too. Anything that goes wrong
in the guard is an error answer, never a forwarded request. Forwarded v2 tensors feed two signals: the drift sample
(core/drift.py, exported at scrape time) and the probing window (core/probing.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from devmlops.core.drift import Baseline, DriftSample, first_tensor_rows
from devmlops.core.guard import Finding, Split, TokenBucket, inspect_text, is_inference, read_request, response_texts
from devmlops.core.manifests import Guard
from devmlops.core.probing import ProbeWindow, exact_hash, fingerprint
from devmlops.guard.metrics import GuardMetrics
from devmlops.guard.server import BadRequest, HttpServer, Request, Response, Stream, per_second
from devmlops.guard.upstream import Answer, UpstreamClient, UpstreamError

__all__ = ["GuardSettings", "create_server"]

_log = logging.getLogger("devmlops.guard")

# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself.
_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Content-Encoding",
    )
)
_NOT_FORWARDED = _HOP | {"accept-encoding"}
_MAX_BODY = 64 * 1024 * 1024  # spec.guard.maxRequestBytes's own maximum: the bound when it is left out
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")  # server-sent events end with a blank line, in any of the three
# A server-sent event's lines end at CR, LF or CRLF only (str.splitlines also breaks at U+2028, U+2029, NEL and
# more, which JSON carries raw inside a string: the rest of a data line would go unread).
_EVENT_LINE = re.compile(r"\r\n|\r|\n")
_UPSTREAM_STATUS = Finding("upstream_status", "the model server answered with an error status")
# The kubelet's probes (core/render.py), which reach the model server through the guard's port: never rate limited,
# or a client over the limit of all clients would have every Pod marked unready and its guard restarted.
_HEALTH = frozenset({"/v2/health/live", "/v2/health/ready"})
_STREAM_TAIL = 256  # characters of earlier events scanned again with each event: a secret split across events


@dataclass(frozen=True)
class GuardSettings:
    upstream: str  # http://127.0.0.1:8080: the model server on the Pod's loopback
    guard: Guard
    model: str = ""
    digest: str = ""
    max_clients: int = 10_000  # per-client buckets kept; the least recently seen go first
    upstream_timeout_seconds: float = 300.0
    max_response_bytes: int = 64 * 1024 * 1024  # a whole (not streamed) answer read for the output checks
    secrets: Callable[[str], str] | None = None  # adapters/secretscan.py when input or output asks for it
    clock: Callable[[], float] = field(default=time.monotonic)
    split: Split | None = None  # a rollout's share of inference requests for another upstream (the canary's guard)
    baseline: Baseline | None = None  # the signed drift baseline; drift is monitored when spec.guard.drift is set too
    probe_window_seconds: float = 300.0  # how long a client's inputs are remembered for the probing signal
    probe_clients: int = 4096  # clients whose recent inputs are remembered (least recently seen dropped first)
    probe_entries: int = 16  # inputs remembered per client: about 250 bytes each, 16 MiB at most in all
    max_signal_values: int = 1_000_000  # numbers of a request's first tensor read for drift and probing, at most


class _Limiter:
    def __init__(self, settings: GuardSettings) -> None:
        guard, now = settings.guard, settings.clock()
        self._global = TokenBucket(guard.rate_limit, now) if guard.rate_limit else None
        self._per_client = guard.per_client
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max = settings.max_clients
        self._clock = settings.clock

    def check(self, client: str) -> Finding | None:
        now = self._clock()
        if self._per_client is not None:
            bucket = self._clients.get(client)
            if bucket is None:
                bucket = self._clients[client] = TokenBucket(self._per_client, now)
                while len(self._clients) > self._max:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client)
            if not bucket.take(now):
                return Finding("rate_limited", f"client {client}: over {self._per_client.requests_per_second}/s")
        if self._global is not None and not self._global.take(now):
            return Finding("rate_limited", "all clients: over the model's rate limit")
        return None


def _error(status: int, finding: Finding) -> Response:
    body = {"error": {"type": "devmlops_guard", "reason": finding.reason, "message": finding.detail}}
    return Response(status, [("Content-Type", "application/json; charset=utf-8")], json.dumps(body).encode())


class _Exchange:
    """One request's audit line, filled in as the request goes, and written once: the first ``finish`` writes it (a
    stream's line is written before its end is sent, and what fails after, a timeout or a client gone, adds none)."""

    def __init__(self, client: str, method: str, path: str) -> None:
        self.started = time.perf_counter()
        self.record: dict[str, Any] = {
            "time": _now(),
            "client": client,
            "method": method,
            "path": path,
        }
        self.input = hashlib.sha256()
        self.output = hashlib.sha256()
        self.done = False
        # The first thing the input or output checks found, kept for the line whatever ends the request after (log
        # mode forwards and streams on; a model server's error, a stream cut short or a client gone would drop it).
        self.finding: Finding | None = None


def create_server(settings: GuardSettings, metrics: GuardMetrics) -> tuple[HttpServer, Callable[[], Awaitable[None]]]:
    """The guard's server (guard/server.py: no router, every path is the model's) with the guard as its one handler,
    and what closes the upstream connections."""
    guard = settings.guard
    limiter = _Limiter(settings)
    upstream = settings.upstream.rstrip("/")
    # A ModelDeployment may leave maxRequestBytes out; the guard still buffers no more than the field's maximum.
    limit = guard.max_request_bytes or _MAX_BODY
    split = settings.split
    split_upstream = split.upstream.rstrip("/") if split is not None else ""
    # By base URL: the local model server and the split's upstream (connections are opened when first needed).
    clients = {base: UpstreamClient(base) for base in (upstream, split_upstream) if base}
    inference_count = [0]  # inference requests that passed their checks: the split's turn counter
    sample = None
    if settings.baseline is not None and guard.drift is not None:
        sample = DriftSample(settings.baseline, guard.drift.sample_size)
        metrics.watch_drift(settings.model, settings.digest, sample, guard.drift.threshold)
    probes = ProbeWindow(
        window_seconds=settings.probe_window_seconds,
        max_clients=settings.probe_clients,
        max_entries=settings.probe_entries,
    )
    probe_count = metrics.probes.labels(settings.model, settings.digest)  # exported from 0 on

    client_header = (guard.client_header or "").lower()

    def client_of(request: Request) -> tuple[str, bool]:
        """The client's name, and whether the request names it more than once: a proxy that adds its header leaves
        the client's own before it, and which one the proxy wrote cannot be told (refused)."""
        if client_header:
            named = [value for key, value in request.headers if key.lower() == client_header]
            if len(named) > 1:
                return f"ip:{request.remote or '?'}", True
            if named and named[0]:
                return named[0][:256], False
        return f"ip:{request.remote or '?'}", False

    def finish(exchange: _Exchange, status: int, result: str, finding: Finding | None, body: bytes = b"") -> None:
        if exchange.done:
            return
        elapsed = time.perf_counter() - exchange.started
        reason = finding.reason if finding else "none"
        exchange.record.update(
            {
                "model": settings.model,
                "digest": settings.digest,
                "status": status,
                "result": result,
                "reason": reason,
                "detail": finding.detail if finding else "",
                "latencyMs": round(elapsed * 1000, 3),
                "inputSha256": exchange.input.hexdigest(),
                "outputSha256": exchange.output.hexdigest(),
            }
        )
        seen = exchange.finding
        if seen is not None and seen is not finding:
            exchange.record["finding"] = {"reason": seen.reason, "detail": seen.detail}
        if guard.audit_content and body:
            exchange.record["output"] = body.decode(errors="replace")[:65536]
        try:
            line = orjson.dumps(exchange.record, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:  # a lone surrogate (a header's bytes that were not UTF-8, a JSON escape): escaped, not lost
            line = json.dumps(exchange.record, sort_keys=True, separators=(",", ":"))
        exchange.done = True  # set once the line is made: a failure before it leaves the error handler its turn
        _audit(line)
        metrics.observe(settings.model, settings.digest, result, reason, elapsed)

    def refuse(exchange: _Exchange, status: int, finding: Finding) -> Response:
        finish(exchange, status, "blocked", finding)
        return _error(status, finding)

    async def read_body(request: Request) -> bytes | None:
        """The body, or None when it is larger than the limit (the server counts it as it arrives)."""
        declared = request.content_length
        if declared is not None and declared > limit:
            return None
        return await request.read()

    def headers_for_upstream(request: Request) -> list[tuple[str, str]]:
        # An answer is read for the output checks as sent: never let the client ask the model server to compress it
        # (the checks would read gzip bytes, find nothing, and pass them on).
        headers = [(k, v) for k, v in request.headers if k.lower() not in _NOT_FORWARDED]
        headers.append(("Accept-Encoding", "identity"))
        return headers

    def output_finding(texts: list[str]) -> Finding | None:
        return inspect_text(texts, guard.output, settings.secrets, "output")

    async def stream(request: Request, answer: Answer, exchange: _Exchange) -> Stream:
        """Pass server-sent events through one by one, each checked (with the end of the earlier ones) first."""
        response = await request.stream(answer.status, _answer_headers(answer))
        tail, pending, finding = "", b"", None  # finding: the first one (log mode streams on)

        async def passed(event: bytes) -> bool:
            """Check one event (with the end of the earlier ones) and send it; False once a hit ended the stream."""
            nonlocal tail, finding
            if guard.output is not None:
                joined = tail + "".join(_event_texts(event, request.path))
                found = output_finding([joined]) if joined else None
                tail = joined[-_STREAM_TAIL:]
                exchange.finding = exchange.finding or found
                if found is not None and guard.action == "block":
                    # Audited before the client sees the end, and before a write that fails when it went away.
                    finish(exchange, answer.status, "blocked", found)
                    await response.write(_sse_error(found))  # the event with the hit never leaves the Pod
                    await response.end()
                    return False
                finding = finding or found
            exchange.output.update(event)
            await response.write(event)
            return True

        async for chunk in answer.chunks():
            seen = max(0, len(pending) - 3)  # pending holds no whole separator: scan from where one could start
            pending += chunk
            start = 0
            for end in _EVENT_END.finditer(pending, seen):
                if not await passed(pending[start : end.end()]):
                    return response
                start = end.end()
            pending = pending[start:]
            if len(pending) > settings.max_response_bytes:  # an event read whole for the checks: bounded like one
                found = Finding("upstream", f"an event over {settings.max_response_bytes} bytes")
                await response.write(_sse_error(found))
                finish(exchange, 502, "error", found)
                await response.end()
                return response
        if pending and not await passed(pending):  # what came after the last blank line: checked the same way
            return response
        if answer.status >= 500:
            finish(exchange, answer.status, "error", _UPSTREAM_STATUS)
        else:
            finish(exchange, answer.status, "logged" if finding else "allowed", finding)
        await response.end()
        return response

    def signals(exchange: _Exchange, parsed: Any, body: bytes) -> None:
        """Feed a forwarded inference request's first tensor to the drift sample and the probing window."""
        values, columns = first_tensor_rows(parsed, max_values=settings.max_signal_values)
        if not columns:
            return
        if sample is not None:
            sample.add(values, columns)
        if probes.is_probe(exchange.record["client"], fingerprint(values, columns), exact_hash(body), settings.clock()):
            probe_count.inc()
            exchange.record["probe"] = True

    def upstream_of(inference: bool, exchange: _Exchange) -> str:
        """Where the request goes: the split upstream on its turn (inference requests only), else the local one."""
        if inference and split is not None:
            turn = split.takes(inference_count[0])
            inference_count[0] += 1
            exchange.record["upstream"] = "split" if turn else "local"
            if turn:
                return split_upstream
        else:
            exchange.record["upstream"] = "local"
        return upstream

    async def handle(request: Request) -> Response | Stream:
        client, ambiguous = client_of(request)
        exchange = _Exchange(client, request.method, request.path)
        try:
            if ambiguous:
                return refuse(exchange, 400, Finding("bad_request", f"more than one {guard.client_header} header"))
            finding = None if _health_probe(request) else limiter.check(exchange.record["client"])
            if finding is not None:
                return refuse(exchange, 429, finding)
            body = await read_body(request)
            if body is None:
                return refuse(exchange, 413, Finding("too_large", f"request body over {limit} bytes"))
            exchange.input.update(body)
            if guard.audit_content and body:
                exchange.record["input"] = body.decode(errors="replace")[:65536]
            inference = is_inference(request.method, request.path)
            finding, parsed = read_request(guard, request.method, request.path, body, settings.secrets, parse=inference)
            if finding is not None and (finding.reason == "schema" or guard.action == "block"):
                return refuse(exchange, 400 if finding.reason == "schema" else 403, finding)
            logged = exchange.finding = finding
            if inference and parsed is not None:
                signals(exchange, parsed, body)
            base = upstream_of(inference, exchange)
            call = clients[base].request(request.method, request.target, headers_for_upstream(request), body)
            async with asyncio.timeout(settings.upstream_timeout_seconds), call as answer:
                if any(
                    k.lower() == "content-encoding" and v.strip().lower() not in ("", "identity")
                    for k, v in answer.headers
                ):
                    # Asked for identity: compressed bytes would be checked unread and passed on without their
                    # Content-Encoding (hop-by-hop here).
                    finding = Finding("upstream", "the model server compressed its answer")
                    finish(exchange, 502, "error", finding)
                    return _error(502, finding)
                if answer.header("Content-Type").startswith("text/event-stream"):
                    return await stream(request, answer, exchange)
                content = await answer.read(settings.max_response_bytes)
                if len(content) > settings.max_response_bytes:
                    finding = Finding("upstream", f"answer over {settings.max_response_bytes} bytes")
                    finish(exchange, 502, "error", finding)
                    return _error(502, finding)
                exchange.output.update(content)
                parsed = _json_or_none(content) if guard.output is not None else None  # read for the checks only
                if guard.output is not None and parsed is None and content:
                    # An answer the output checks cannot read (binary tensors, another encoding): never passed unread.
                    return refuse(
                        exchange, 502, Finding("unreadable", "output: the answer is not JSON the checks read")
                    )
                found = output_finding(response_texts(parsed, request.path)) if guard.output else None
                exchange.finding = exchange.finding or found
                if found is not None and guard.action == "block":
                    return refuse(exchange, 403, found)
                if answer.status >= 500:  # passed on as it came; counted as the model server's error
                    finish(exchange, answer.status, "error", _UPSTREAM_STATUS, content)
                else:
                    result = "logged" if (found or logged) else "allowed"
                    finish(exchange, answer.status, result, found or logged, content)
                return Response(answer.status, _answer_headers(answer), content)
        except BadRequest as exc:
            return refuse(exchange, 400, Finding("bad_request", str(exc)))
        except ConnectionResetError:  # the client went away: nothing to answer, but the request is audited
            finding = Finding("client_closed", "the client closed the connection")
            finish(exchange, 499, "error", finding)
            return _error(499, finding)
        except (UpstreamError, TimeoutError) as exc:
            finding = Finding("upstream", f"model server unavailable ({type(exc).__name__})")
            finish(exchange, 502, "error", finding)
            return _error(502, finding)
        except Exception:  # a bug in the guard: an error answer, never a forwarded request
            _log.exception("guard error on %r %r", request.method, request.path)  # repr: no client line breaks
            finding = Finding("internal", "internal error in the guard (fail closed)")
            finish(exchange, 500, "error", finding)
            return _error(500, finding)
        except asyncio.CancelledError:  # the guard stops (asyncio.run cancels what shutdown left): still audited
            finish(exchange, 503, "error", Finding("cancelled", "the guard stopped before the answer was complete"))
            raise

    def refused(remote: str, status: int, reason: str) -> None:
        """A head the server answered itself (its parser refused it): audited like any refused request."""
        finish(_Exchange(f"ip:{remote or '?'}", "", ""), status, "blocked", Finding("bad_request", reason))

    async def close() -> None:
        for client in clients.values():
            client.close()

    return HttpServer(handle, limit, refused), close


_now = per_second("%Y-%m-%dT%H:%M:%SZ")  # the audit line's time, RFC 3339 UTC


def _audit(line: str) -> None:
    """One audit line on standard output, flushed before the answer leaves the guard. Written directly: through the
    logging module a line cost five times as much (about 20 µs against 4)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _health_probe(request: Request) -> bool:
    """A kubelet's probe: GET or HEAD of a v2 health path as sent (not percent-encoded), with no body."""
    return (
        request.method in ("GET", "HEAD")
        and request.target in _HEALTH
        and request.header("content-length") is None
        and request.header("transfer-encoding") is None
    )


def _answer_headers(answer: Answer) -> list[tuple[str, str]]:
    return [(k, v) for k, v in answer.headers if k.lower() not in _HOP]


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _event_texts(events: bytes, path: str) -> list[str]:
    """The texts of server-sent events' ``data:`` lines (OpenAI streams send one JSON chunk per event, Triton's
    generate_stream one answer object); ``path`` is the request's (``response_texts``)."""
    texts: list[str] = []
    for line in _EVENT_LINE.split(events.decode(errors="replace")):
        if line.startswith("data:"):
            data = line[5:].strip()
            if not data or data == "[DONE]":
                continue
            parsed = _json_or_none(data.encode())
            texts += response_texts(parsed, path) if parsed is not None else [data]
    return texts


def _sse_error(finding: Finding) -> bytes:
    body = {"error": {"type": "devmlops_guard", "reason": finding.reason, "message": finding.detail}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"
