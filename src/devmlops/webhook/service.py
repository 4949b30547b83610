"""The admission service behind ``/validate``: resolve evidence from the caches, then ``decide()``."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from devmlops.adapters.approvals import find_approval
from devmlops.adapters.evidence import DocumentLookup, resolve_evidence
from devmlops.core.childreview import DEFAULT_SERVER_IMAGES, controller_of
from devmlops.core.decision import MODEL_APPROVAL, MODEL_DEPLOYMENT, MODEL_SERVER_KINDS, decide
from devmlops.core.evidence import Evidence
from devmlops.core.model import Decision
from devmlops.core.policy import Authority, PolicySet
from devmlops.core.ports import PolicyEngine, SignatureVerifier, SignedModel
from devmlops.core.review import AdmissionRequest, GroupVersionKind
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

    def inference_service(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...


class AdmissionService:
    def __init__(
        self,
        *,
        policies: Callable[[], PolicySet],
        lookup: ClusterLookup,
        verifier: SignatureVerifier,
        engine: PolicyEngine | None = None,
        model_server_images: tuple[str, ...] = DEFAULT_SERVER_IMAGES,
    ) -> None:
        self._policies = policies
        self._lookup = lookup
        self._verifier = verifier
        self._engine = engine
        self._model_server_images = model_server_images

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
        if kind == MODEL_DEPLOYMENT:
            return replace(self._model_evidence(obj, now), now=stamp, requester_stamped=True)
        if kind in MODEL_SERVER_KINDS:
            owner = self._owner_model(request.namespace, obj)
            decision = self._serving_decision(owner, request) if owner else None
            return Evidence(
                owner=owner, owner_decision=decision, now=stamp, model_server_images=self._model_server_images
            )
        labels = dict(self._lookup.namespace_labels(request.namespace))
        if kind == MODEL_APPROVAL:
            name = str((obj.get("spec") or {}).get("modelDeployment") or "")
            return Evidence(
                target=self._lookup.model_deployment(request.namespace, name), namespace_labels=labels, now=stamp
            )
        return Evidence(namespace_labels=labels, now=stamp)

    def _model_evidence(self, model: Mapping[str, Any], now: dt.datetime) -> Evidence:
        """A ModelDeployment's documents and its valid approval, for admission and for the serving stage."""
        return replace(
            resolve_evidence(model, self._lookup), approval=find_approval(self._lookup.approvals(), model, now)
        )

    def _owner_model(self, namespace: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Follow the controller chain (InferenceService -> ModelDeployment), requiring matching uids."""
        ref = controller_of(obj)
        if ref and ref.get("kind") == "InferenceService":
            isvc = self._lookup.inference_service(namespace, str(ref.get("name")))
            if isvc is None or (isvc.get("metadata") or {}).get("uid") != ref.get("uid"):
                return None
            ref = controller_of(isvc)
        if (
            not ref
            or ref.get("kind") != "ModelDeployment"
            or not str(ref.get("apiVersion", "")).startswith("devmlops.io/")
        ):
            return None
        model = self._lookup.model_deployment(namespace, str(ref.get("name")))
        if model is None or (model.get("metadata") or {}).get("uid") != ref.get("uid"):
            return None  # a copied ownerReference that names another object
        return model

    def _serving_decision(self, model: Mapping[str, Any], child: AdmissionRequest) -> Decision:
        """The owner decided again at the serving stage: signature, policies, approval, Rego."""
        metadata = model.get("metadata") or {}
        request = AdmissionRequest(
            uid=child.uid,
            kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
            operation="UPDATE",
            namespace=child.namespace,
            name=str(metadata.get("name")),
            username=child.username,
            groups=child.groups,
            object=model,
            old_object=model,
        )
        evidence = self._model_evidence(model, dt.datetime.now(dt.UTC))
        return decide(request, self._policies(), evidence, self._verifier, self._engine, stage="serving")
