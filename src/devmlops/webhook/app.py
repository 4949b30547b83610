"""``create_app(settings, deps)``: the admission endpoints, built without side effects at import time.

Every path out of ``/validate`` is an AdmissionReview: a malformed body, an oversized one, an internal error or
a timeout all become a denial with a reason (fail closed), never an admission.
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

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from devmlops.core.audit import audit_record
from devmlops.core.model import Decision, GateResult
from devmlops.core.mutation import stamp_patch
from devmlops.core.review import AdmissionRequest, build_response, parse_review
from devmlops.errors import DevmlopsError, InvalidInputError
from devmlops.webhook.metrics import WebhookMetrics
from devmlops.webhook.settings import WebhookSettings

__all__ = ["WebhookDeps", "create_app"]

_log = logging.getLogger("devmlops.webhook")
_audit = logging.getLogger("devmlops.audit")


class _BodyTooLarge(Exception):
    pass


def _emit_audit(record: dict[str, Any]) -> None:
    _audit.info(json.dumps(record, sort_keys=True, separators=(",", ":")))


@dataclass(frozen=True, slots=True)
class WebhookDeps:
    """What the webhook calls out to; tests pass their own."""

    decide: Callable[[AdmissionRequest], Decision]
    metrics: WebhookMetrics = field(default_factory=WebhookMetrics.create)
    audit: Callable[[dict[str, Any]], None] = _emit_audit
    ready: Callable[[], bool] = lambda: True
    status: Callable[[], dict[str, Any]] = dict


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
    app = FastAPI(title="devmlops admission webhook", docs_url=None, redoc_url=None, openapi_url=None)
    pending = 0  # reviews in or waiting for the decision pool; only the event loop's thread touches it

    @app.post("/validate")
    async def validate(request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            raw = await _read_limited(request, settings.max_body_bytes)
        except _BodyTooLarge:
            reason = f"AdmissionReview larger than the limit of {settings.max_body_bytes} bytes"
            return JSONResponse(_denial("", "request", reason), status_code=413)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return JSONResponse(_denial("", "request", f"AdmissionReview is not valid JSON: {exc}"), status_code=400)
        uid = _uid_of(body)
        try:
            admission = parse_review(body)
        except InvalidInputError as exc:
            return JSONResponse(_denial(uid, "request", exc.user_message), status_code=200 if uid else 400)
        nonlocal pending
        try:
            if pending >= settings.max_pending_decisions:
                # Bounded queueing: past the limit a review would only wait towards the API server's timeout.
                raise _Overloaded
            pending += 1
            try:
                decision = await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(pool, deps.decide, admission),
                    timeout=settings.decision_timeout_seconds,
                )
            finally:
                pending -= 1
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
        deps.metrics.observe(
            kind=admission.kind.kind, operation=admission.operation, decision=decision, seconds=elapsed
        )
        deps.audit(audit_record(admission, decision, latency_seconds=elapsed))
        return JSONResponse(dict(build_response(decision, admission.uid)))

    @app.post("/mutate")
    async def mutate(request: Request) -> JSONResponse:
        """Stamp requested-by / approved-by from userInfo; anything unreadable is refused (fail closed)."""
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
        patch = stamp_patch(admission)
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
        return Response(generate_latest(deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
