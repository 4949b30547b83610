"""The admission service behind ``/validate``: resolve evidence from the caches, then ``decide()``."""

from __future__ import annotations

import time
from collections.abc import Callable

from devmlops.adapters.evidence import DocumentLookup, resolve_evidence
from devmlops.core.decision import MODEL_DEPLOYMENT, decide
from devmlops.core.evidence import Evidence
from devmlops.core.model import Decision
from devmlops.core.policy import Authority, PolicySet
from devmlops.core.ports import SignatureVerifier, SignedModel
from devmlops.core.review import AdmissionRequest
from devmlops.webhook.metrics import WebhookMetrics

__all__ = ["AdmissionService", "TimedVerifier"]


class TimedVerifier:
    """Observes how long each verification takes (devmlops_gate_duration_seconds)."""

    def __init__(self, inner: SignatureVerifier, metrics: WebhookMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        started = time.perf_counter()
        try:
            return self._inner.verify_model(bundle, authority)
        finally:
            self._metrics.gate_duration.labels("signature").observe(time.perf_counter() - started)

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        started = time.perf_counter()
        try:
            return self._inner.verify_blob(artifact, bundle, authority)
        finally:
            self._metrics.gate_duration.labels("sbom").observe(time.perf_counter() - started)


class AdmissionService:
    def __init__(
        self, *, policies: Callable[[], PolicySet], lookup: DocumentLookup, verifier: SignatureVerifier
    ) -> None:
        self._policies = policies
        self._lookup = lookup
        self._verifier = verifier

    def decide(self, request: AdmissionRequest) -> Decision:
        evidence = Evidence()
        is_model = (request.kind.group, request.kind.kind) == MODEL_DEPLOYMENT
        if is_model and request.object is not None and request.operation != "DELETE":
            obj = dict(request.object)
            obj["metadata"] = {**(obj.get("metadata") or {}), "namespace": request.namespace}
            evidence = resolve_evidence(obj, self._lookup)
        return decide(request, self._policies(), evidence, self._verifier)
