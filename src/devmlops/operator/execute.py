"""Run a reconcile plan's actions against the API server, in order: children first, then the status, then Events
(the status first when the children are rendered from it: a rollout's step, which the webhook admits them against).
Foreign EndpointSlices (``reconcile.slice_removals``) and Services (``reconcile.service_removals``) are removed before
any plan, each with a Warning Event.

Nothing here decides: what to write, scale or say comes from ``reconcile.plan``. An action that fails raises (the
caller parks the reconcile for a retry), except scaling to zero, a slice's or a Service's removal and Events, whose
failure is reported, not retried (as before the plan: a re-check round scales again; the driver looks at a model's
slices and Services again soon; an Event is a courtesy).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from devmlops.errors import DevmlopsError
from devmlops.operator.metrics import ROLLOUT_EVENTS, metrics
from devmlops.operator.reconcile import (
    DeleteChild,
    Plan,
    PostEvent,
    RemoveService,
    RemoveSlice,
    Retry,
    ScaleToZero,
    WriteChild,
    with_serving_message,
)
from devmlops.operator.retrain import RequestRetrain

__all__ = ["GROUP", "PLURAL", "VERSION", "Executor", "RetryRequested", "dynamic_client"]

GROUP, VERSION, PLURAL = "devmlops.io", "v1alpha1", "modeldeployments"
_log = logging.getLogger("devmlops.operator")

EventPoster = Callable[[Mapping[str, Any], PostEvent], None]


class RetryRequested(DevmlopsError):
    """The plan asked to try again later (``Retry``): nothing could be decided, state and server kept."""


RETRAIN_TIMEOUT_SECONDS = 5.0
SLICE_REMOVED, SLICE_NOT_REMOVED = "ForeignEndpointSliceRemoved", "ForeignEndpointSliceNotRemoved"  # Event reasons
SERVICE_REMOVED, SERVICE_NOT_REMOVED = "ForeignServiceRemoved", "ForeignServiceNotRemoved"
_Removal = RemoveSlice | RemoveService


class Executor:
    def __init__(self, api_client: k8s.ApiClient, dynamic: DynamicClient, *, retrain_url: str | None = None) -> None:
        self._retrain_url = retrain_url  # where retrain requests are POSTed (None: Events only)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._discovery = k8s.DiscoveryV1Api(api_client)
        self._dynamic = dynamic

    def run(
        self, plan: Plan, model: Mapping[str, Any], *, write_status: bool, post: EventPoster | None = None
    ) -> dict[str, Any] | None:
        """Children, scale, status (when ``write_status``), then Events (``post``: kopf's, inside a handler).
        Returns the status written (or planned), None when the plan has none."""
        for action in plan.actions:
            if isinstance(action, Retry):
                raise RetryRequested(action.reason)
        if plan.outcome in ("allowed", "violation"):
            metrics.reconciles.labels("ModelDeployment", plan.outcome).inc()
        status = dict(plan.status) if plan.status is not None else None
        metadata = model["metadata"]
        written = False
        if status is not None and plan.status_first:
            self.patch_status(str(metadata["namespace"]), str(metadata["name"]), {"status": status})
            written = True
        for action in plan.actions:
            if isinstance(action, WriteChild):
                self.write_child(action)
            elif isinstance(action, DeleteChild):
                self.delete_child(str(metadata["namespace"]), action)
            elif isinstance(action, ScaleToZero):
                error = self.scale_to_zero(model, action)
                if error and status is not None:
                    status = with_serving_message(status, action.outcome(error))
            elif isinstance(action, RequestRetrain) and status is not None:
                failure = self.request_retrain(action)
                status["retrain"] = {**status["retrain"], "notified": not failure}
                if failure:
                    (post or self.post_event)(model, PostEvent("Warning", "RetrainNotifyFailed", failure))
        if status is not None and write_status and not written:
            self.patch_status(str(metadata["namespace"]), str(metadata["name"]), {"status": status})
        elif written and any(isinstance(action, RequestRetrain) for action in plan.actions) and status is not None:
            self.patch_status(
                str(metadata["namespace"]), str(metadata["name"]), {"status": {"retrain": status["retrain"]}}
            )
        if status is not None:
            metrics.record_phase(f"{metadata['namespace']}/{metadata['name']}", status["phase"])
        for action in plan.actions:
            if isinstance(action, PostEvent):
                if action.reason in ROLLOUT_EVENTS:  # counted and logged: the rollout's audit trail
                    metrics.rollout_steps.labels(action.reason).inc()
                    _log.info("%s %s/%s: %s", action.reason, metadata["namespace"], metadata["name"], action.message)
                (post or self.post_event)(model, action)
        return status

    def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, dict(patch))

    def write_child(self, action: WriteChild) -> None:
        """Create, or replace whole with the stored resourceVersion (a conflict raises: the retry observes again).
        Controllers' finalizers are kept, as they are bookkeeping; a Service keeps its allocated addresses."""
        wanted = action.wanted
        resource = self._dynamic.resources.get(api_version=wanted["apiVersion"], kind=wanted["kind"])
        namespace, name = wanted["metadata"]["namespace"], wanted["metadata"]["name"]
        if action.current is None:
            resource.create(body=wanted, namespace=namespace)
            _log.info("%s %s created", wanted["kind"], name)
            return
        metadata = action.current.get("metadata") or {}
        body = {
            **wanted,
            "metadata": {
                **wanted["metadata"],
                "resourceVersion": metadata.get("resourceVersion"),
                "finalizers": metadata.get("finalizers") or [],
            },
        }
        if wanted["kind"] == "Service":  # allocated addresses are immutable
            kept = {k: v for k, v in (action.current.get("spec") or {}).items() if k.startswith("clusterIP")}
            body["spec"] = {**wanted["spec"], **kept}
        resource.replace(body=body, name=name, namespace=namespace)
        _log.info("%s %s replaced", wanted["kind"], name)
        if action.tampered:
            metrics.child_drift.labels(wanted["kind"]).inc()
            _log.warning("drift repaired: %s %s: %s", wanted["kind"], name, "; ".join(action.tampered[:5]))

    def request_retrain(self, action: RequestRetrain) -> str:
        """POST the request to the configured URL; the failure ('' on success, or with no URL: Events only). A
        failed request is asked again at the next reconcile (status.retrain.notified false)."""
        if self._retrain_url is None:
            return ""
        try:
            response = httpx.post(self._retrain_url, json=action.payload, timeout=RETRAIN_TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            return f"POST {self._retrain_url}: {type(exc).__name__}: {exc}"
        if response.status_code >= 300:
            return f"POST {self._retrain_url}: HTTP {response.status_code}"
        _log.info("retrain requested at %s for %s", self._retrain_url, action.payload["model"]["digest"])
        return ""

    def remove_slices(
        self, model: Mapping[str, Any], removals: Sequence[RemoveSlice], *, post: EventPoster | None = None
    ) -> bool:
        """Delete each foreign EndpointSlice and say so in a Warning Event on the model; whether all are gone."""

        def delete(action: RemoveSlice) -> None:
            self._discovery.delete_namespaced_endpoint_slice(action.slice.name, action.namespace)

        return self._remove(model, removals, delete, (SLICE_REMOVED, SLICE_NOT_REMOVED), post)

    def remove_services(
        self, model: Mapping[str, Any], removals: Sequence[RemoveService], *, post: EventPoster | None = None
    ) -> bool:
        """Delete each foreign Service and say so in a Warning Event on the model; whether all are gone. No model
        owns such a Service, so the webhook does not review its deletion."""

        def delete(action: RemoveService) -> None:
            self._core.delete_namespaced_service(action.service.name, action.namespace)

        return self._remove(model, removals, delete, (SERVICE_REMOVED, SERVICE_NOT_REMOVED), post)

    def _remove(
        self,
        model: Mapping[str, Any],
        removals: Sequence[_Removal],
        delete: Callable[[Any], None],
        reasons: tuple[str, str],
        post: EventPoster | None,
    ) -> bool:
        """Delete each object (already gone is fine) with a Warning Event on the model saying it was removed, or that
        it was not: a failure is logged and reported, not raised (the driver looks at the model again soon)."""
        removed = True
        for action in removals:
            error = ""
            try:
                delete(action)
            except ApiException as exc:
                if exc.status != 404:
                    error = f"HTTP {exc.status} {exc.reason}"
            _log.warning("%s", action.message(error))
            removed = removed and not error
            (post or self.post_event)(model, PostEvent("Warning", reasons[bool(error)], action.message(error)))
        return removed

    def delete_child(self, namespace: str, action: DeleteChild) -> None:
        """Delete a child no longer rendered (already gone is fine; any other failure raises: retried)."""
        child = action.child
        resource = self._dynamic.resources.get(api_version=child.api_version, kind=child.kind)
        try:
            resource.delete(name=child.name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        _log.info("%s %s deleted", child.kind, child.name)

    def scale_to_zero(self, model: Mapping[str, Any], action: ScaleToZero) -> str:
        """Only the replica field changes (the webhook's scale-down rule, always admitted); the next reconcile that
        passes finds the child differing from the rendering and writes it back whole. Returns the error, if any."""
        child = action.child
        resource = self._dynamic.resources.get(api_version=child.api_version, kind=child.kind)
        patch: dict[str, Any] = (
            {"spec": {"predictor": {"minReplicas": 0}}}
            if child.kind == "InferenceService"
            else {"spec": {"replicas": 0}}
        )
        try:
            resource.patch(
                body=patch,
                name=child.name,
                namespace=model["metadata"]["namespace"],
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            _log.warning("scaling %s/%s to zero failed: %s", child.kind, child.name, exc.status)
            return str(exc.status)
        return ""

    def post_event(self, model: Mapping[str, Any], event: PostEvent) -> None:
        """A core/v1 Event about a ModelDeployment, as kopf writes them (kopf's own posting needs a handler)."""
        metadata = model["metadata"]
        now = dt.datetime.now(dt.UTC)
        body: Any = {
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelDeployment",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
            },
            "reason": event.reason,
            "message": event.message[:1024],
            "type": event.type,
            "source": {"component": "devmlops-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._core.create_namespaced_event(metadata["namespace"], body)
        except ApiException:
            return  # an Event is a courtesy; the status condition carries the same message


def dynamic_client(api_client: k8s.ApiClient) -> DynamicClient:
    return DynamicClient(api_client)
