"""The admission service behind ``/validate``: resolve evidence from the caches, then ``decide()``."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from devmlops.adapters.approvals import find_approval
from devmlops.adapters.evidence import DocumentLookup, resolve_evidence
from devmlops.core.decision import MODEL_APPROVAL, MODEL_DEPLOYMENT, decide
from devmlops.core.evidence import Evidence
from devmlops.core.model import Decision
from devmlops.core.policy import Authority, PolicySet
from devmlops.core.ports import PolicyEngine, SignatureVerifier, SignedModel
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


class ClusterLookup(DocumentLookup, Protocol):
    """The evidence lookup plus the ModelDeployments and ModelApprovals the webhook watches."""

    def model_deployment(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def approvals(self) -> Iterable[Mapping[str, Any]]: ...


class AdmissionService:
    def __init__(
        self,
        *,
        policies: Callable[[], PolicySet],
        lookup: ClusterLookup,
        verifier: SignatureVerifier,
        engine: PolicyEngine | None = None,
    ) -> None:
        self._policies = policies
        self._lookup = lookup
        self._verifier = verifier
        self._engine = engine

    def decide(self, request: AdmissionRequest) -> Decision:
        return decide(request, self._policies(), self.evidence(request), self._verifier, self._engine)

    def evidence(self, request: AdmissionRequest) -> Evidence:
        """What the request refers to, from the caches, with the time of this decision."""
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        kind = (request.kind.group, request.kind.kind)
        if request.object is None or request.operation == "DELETE":
            return Evidence(now=stamp)
        obj = {**request.object, "metadata": {**(request.object.get("metadata") or {}), "namespace": request.namespace}}
        labels = dict(self._lookup.namespace_labels(request.namespace))
        if kind == MODEL_DEPLOYMENT:
            resolved = resolve_evidence(obj, self._lookup)
            approval = find_approval(self._lookup.approvals(), obj, now)
            return replace(resolved, approval=approval, now=stamp, requester_stamped=True)
        if kind == MODEL_APPROVAL:
            name = str((obj.get("spec") or {}).get("modelDeployment") or "")
            return Evidence(
                target=self._lookup.model_deployment(request.namespace, name), namespace_labels=labels, now=stamp
            )
        return Evidence(namespace_labels=labels, now=stamp)
