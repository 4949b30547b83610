"""``create_app(settings, deps)``: the admission endpoints, built without side effects at import time.

Every path out of ``/validate`` is an AdmissionReview: a malformed body, an oversized one, an internal error or
a timeout all become a denial with a reason (fail closed), never an admission.

``/validate`` is answered by a plain ASGI handler in front of FastAPI: FastAPI's routing, dependency solving and
response classes cost more per review than a warm decision does (docs/benchmarks.md has the profile). The other
routes are ordinary FastAPI routes.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from devmlops.core.audit import audit_record
from devmlops.core.model import Decision, GateResult
from devmlops.core.mutation import stamp_patch
from devmlops.core.review import AdmissionRequest, build_response, parse_review
from devmlops.errors import DevmlopsError, InvalidInputError, RegistryUnavailableError
from devmlops.webhook.inline import WouldBlock, deciding_inline
from devmlops.webhook.metrics import WebhookMetrics
from devmlops.webhook.settings import WebhookSettings

__all__ = ["WebhookDeps", "create_app"]

_log = logging.getLogger("devmlops.webhook")
_audit = logging.getLogger("devmlops.audit")


class _BodyTooLarge(Exception):
    pass


def _emit_audit(record: dict[str, Any]) -> None:
    _audit.info(_dumps(record, sort_keys=True).decode())


def _loads(raw: bytes) -> Any:
    """orjson first (about 3x faster); what it refuses (integers past 64 bits, NaN, UTF-16) goes to the standard
    parser, so the webhook accepts and rejects exactly the bodies it did before, with the same error text."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:  # a lone surrogate or a big integer taken from the body: the standard encoder escapes it
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class WebhookDeps:
    """What the webhook calls out to; tests pass their own."""

    decide: Callable[[AdmissionRequest], Decision]
    # The mutating webhook's JSONPatch; the service looks up what the pure stamp_patch needs (an approval's target).
    stamp: Callable[[AdmissionRequest], list[dict[str, Any]]] = stamp_patch
    metrics: WebhookMetrics = field(default_factory=WebhookMetrics.create)
    audit: Callable[[dict[str, Any]], None] = _emit_audit
    ready: Callable[[], bool] = lambda: True
    status: Callable[[], dict[str, Any]] = dict
    # True only when everything ``decide`` can wait on is guarded (webhook/inline.py): it is then tried on the
    # event loop first and handed to the pool only when it raises WouldBlock.
    inline_decisions: bool = False
    # The /metrics document; None: ``metrics.registry`` (several worker processes pass their aggregate).
    exposition: Callable[[], bytes] | None = None


class _Overloaded(Exception):
    """More reviews pending than settings.max_pending_decisions."""


def _denial(uid: str, gate: str, reason: str) -> dict[str, Any]:
    decision = Decision((GateResult(gate=gate, outcome="error", reason=reason),))
    return dict(build_response(decision, uid))


def _uid_of(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("request"), dict):
        uid = body["request"].get("uid")
        if isinstance(uid, str):
            return uid
    return ""


class _Disconnected(Exception):
    pass


_JSON = (b"content-type", b"application/json")
_UID_KEY = b'"uid":""'
_INLINE_MAX_BODY = 256 * 1024  # larger reviews are decided in the pool, under the deadline, whatever the cache holds
_SLOW_INLINE_SECONDS = 0.05  # an inline decision takes well under a millisecond; this long means it waited
_SLOW_INLINE_WARN_EVERY = 60.0


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_json(send: Send, body: bytes, status: int = 200) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [_JSON, (b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What one set of gate results means on the wire and in the metrics, worked out once: the response JSON
    around the uid, and the metric children it increments."""

    head: bytes
    tail: bytes
    allowed: str
    mode: str
    gate_children: tuple[Any, ...]


class _Verdicts:
    """The same gate results repeat from review to review, so their response is serialised once (only the uid is
    spliced in) and their labelled metric children are looked up once (``labels()`` costs more than ``inc()``).
    The counts are those of ``WebhookMetrics.observe``."""

    def __init__(self, metrics: WebhookMetrics, limit: int = 1024) -> None:
        self._metrics = metrics
        self._verdicts: dict[tuple[GateResult, ...], _Verdict] = {}
        self._requests: dict[tuple[str, str, str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._limit = limit

    def _verdict(self, decision: Decision) -> _Verdict:
        verdict = self._verdicts.get(decision.results)
        if verdict is None:
            # With uid "", the first '"uid":""' is the response's own key: a reason's quotes are escaped, and an
            # annotation key always holds a dot.
            head, _key, tail = _dumps(build_response(decision, "")).partition(_UID_KEY)
            gates = self._metrics.gate_results
            verdict = _Verdict(
                head=head + b'"uid":',
                tail=tail,
                allowed="true" if decision.allowed else "false",
                mode="warn" if decision.warnings else "enforce",
                gate_children=tuple(gates.labels(r.gate, r.outcome) for r in decision.results),
            )
            if len(self._verdicts) >= self._limit:
                self._verdicts.clear()
            self._verdicts[decision.results] = verdict
        return verdict

    def answer(self, *, uid: str, kind: str, operation: str, decision: Decision, seconds: float) -> bytes:
        """Count the review in the metrics and return the AdmissionReview to send."""
        verdict = self._verdict(decision)
        key = (kind, operation, verdict.allowed, verdict.mode)
        requests = self._requests.get(key)
        if requests is None:
            if len(self._requests) >= self._limit:
                self._requests.clear()
            requests = self._requests[key] = self._metrics.requests.labels(*key)
        requests.inc()
        duration = self._durations.get(kind)
        if duration is None:
            if len(self._durations) >= self._limit:
                self._durations.clear()
            duration = self._durations[kind] = self._metrics.duration.labels(kind)
        duration.observe(seconds)
        for child in verdict.gate_children:
            child.inc()
        return verdict.head + _dumps(uid) + verdict.tail


class _AdmissionApp(FastAPI):
    """FastAPI, with POST /validate taken before FastAPI's middleware and routing."""

    validate: Callable[[Scope, Receive, Send], Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        validate = self.validate
        if (
            validate is not None
            and scope["type"] == "http"
            and scope["path"] == "/validate"
            and scope["method"] == "POST"
        ):
            await validate(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: WebhookSettings, deps: WebhookDeps) -> FastAPI:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=settings.decision_workers, thread_name_prefix="decide")
    app = _AdmissionApp(title="devmlops admission webhook", docs_url=None, redoc_url=None, openapi_url=None)
    # Reviews parsed and not yet answered: waiting for the event loop (inline) or for the decision pool, or deciding.
    # Only the event loop's thread touches it.
    pending = 0
    verdicts = _Verdicts(deps.metrics)
    loop_decisions = deps.inline_decisions
    slow_warned = -_SLOW_INLINE_WARN_EVERY

    async def decide(admission: AdmissionRequest, size: int) -> Decision:
        nonlocal pending, slow_warned
        if pending >= settings.max_pending_decisions:
            # Bounded queueing: past the limit a review would only wait towards the API server's timeout.
            raise _Overloaded
        pending += 1
        try:
            if loop_decisions and size <= _INLINE_MAX_BODY:
                # Yield once, so that reviews that arrived with this one are counted in ``pending`` before any of
                # them is decided: the bound then holds for reviews waiting for the loop as for the pool.
                await asyncio.sleep(0)
                started = time.perf_counter()
                try:
                    with deciding_inline():
                        return deps.decide(admission)
                except WouldBlock:
                    pass  # something is not cached: decide in the pool, under the deadline
                finally:
                    now = time.perf_counter()
                    if now - started > _SLOW_INLINE_SECONDS and now - slow_warned > _SLOW_INLINE_WARN_EVERY:
                        slow_warned = now  # a wait nobody guarded (webhook/inline.py), or a starved CPU
                        _log.warning("an inline decision took %.0f ms (held the event loop)", (now - started) * 1000)
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(pool, deps.decide, admission),
                timeout=settings.decision_timeout_seconds,
            )
        finally:
            pending -= 1

    async def validate(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            raw = await _read_body(scope, receive, settings.max_body_bytes)
        except _BodyTooLarge:
            reason = f"AdmissionReview larger than the limit of {settings.max_body_bytes} bytes"
            await _send_json(send, _dumps(_denial("", "request", reason)), 413)
            return
        except _Disconnected:
            return
        try:
            body = _loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            reason = f"AdmissionReview is not valid JSON: {exc}"
            await _send_json(send, _dumps(_denial("", "request", reason)), 400)
            return
        uid = _uid_of(body)
        try:
            admission = parse_review(body)
        except InvalidInputError as exc:
            await _send_json(send, _dumps(_denial(uid, "request", exc.user_message)), 200 if uid else 400)
            return
        try:
            decision = await decide(admission, len(raw))
        except _Overloaded:
            reason = (
                f"webhook overloaded: {settings.max_pending_decisions} decisions already pending (fail closed); "
                "retry the request"
            )
            decision = Decision((GateResult(gate="internal", outcome="error", reason=reason),))
        except TimeoutError:
            reason = f"no decision within {settings.decision_timeout_seconds:g}s (fail closed)"
            decision = Decision((GateResult(gate="internal", outcome="error", reason=reason),))
        except DevmlopsError as exc:
            _log.warning("decision failed for %s: %s %s", uid, exc.user_message, exc.context)
            decision = Decision((GateResult(gate="internal", outcome="error", reason=exc.user_message),))
        except Exception:
            _log.exception("internal error while deciding %s", uid)
            decision = Decision(
                (GateResult(gate="internal", outcome="error", reason="internal error in the webhook (fail closed)"),)
            )
        elapsed = time.perf_counter() - started
        kind = admission.kind.kind
        answer = verdicts.answer(
            uid=admission.uid, kind=kind, operation=admission.operation, decision=decision, seconds=elapsed
        )
        deps.audit(audit_record(admission, decision, latency_seconds=elapsed))
        await _send_json(send, answer)

    app.validate = validate

    @app.post("/mutate")
    async def mutate(request: Request) -> JSONResponse:
        """Stamp requested-by / approved-by from userInfo, pin tags to digests; anything unreadable or unresolvable is
        refused (fail closed)."""
        try:
            raw = await _read_limited(request, settings.max_body_bytes)
        except _BodyTooLarge:
            return JSONResponse(_denial("", "request", "AdmissionReview larger than the limit"), status_code=413)
        body: object = None
        try:
            body = json.loads(raw)
            admission = parse_review(body)
        except (ValueError, UnicodeDecodeError, InvalidInputError) as exc:
            reason = exc.user_message if isinstance(exc, InvalidInputError) else f"not valid JSON: {exc}"
            return JSONResponse(_denial(_uid_of(body), "request", reason))
        try:
            # Cache lookups, and for a ModelDeployment naming a tag a registry request: off the event loop, bounded.
            patch = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(pool, deps.stamp, admission),
                timeout=settings.decision_timeout_seconds,
            )
        except TimeoutError:
            reason = f"no patch within {settings.decision_timeout_seconds:g}s (fail closed)"
            return JSONResponse(_denial(admission.uid, "internal", reason))
        except InvalidInputError as exc:
            return JSONResponse(_denial(admission.uid, "request", exc.user_message))
        except RegistryUnavailableError as exc:
            _log.warning("mutation refused for %s: %s %s", admission.uid, exc.user_message, exc.context)
            return JSONResponse(_denial(admission.uid, "registry", exc.user_message))
        except Exception:
            _log.exception("internal error while stamping %s", admission.uid)
            return JSONResponse(_denial(admission.uid, "internal", "internal error in the webhook (fail closed)"))
        response: dict[str, Any] = {"uid": admission.uid, "allowed": True}
        if patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        return JSONResponse({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if deps.ready():
            return JSONResponse({"status": "ready", **deps.status()})
        return JSONResponse({"status": "not ready", **deps.status()}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        text = deps.exposition() if deps.exposition is not None else generate_latest(deps.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return app
