"""KServe's Warning Events on InferenceServices, followed by one watch the API server filters.

When KServe cannot render an InferenceService it says so only in an Event (see readiness.py), which may arrive
after the InferenceService's last change: kopf's watch of InferenceServices never sees it, so the operator follows
these Events too and looks at the InferenceService again when one comes.

Likewise the kubelet's BackOff Warnings about a predictor Pod's storage initializer (devmlops's, refusing the model):
KServe does not look at the Pods again then, so the operator looks at the InferenceService, and its Pods, itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kubernetes import client as k8s

from devmlops.adapters.kubecache import WatchCache
from devmlops.operator.retries import Key

__all__ = ["KServeWarnings", "events_about", "inference_service_of_pod"]

FIELD_SELECTOR = "involvedObject.kind=InferenceService,type=Warning"
POD_FIELD_SELECTOR = "involvedObject.kind=Pod,type=Warning,reason=BackOff"
_PREDICTOR = "-predictor"  # KServe's predictor Deployment: <InferenceService>-predictor; its Pods <that>-<hash>-<id>
_KEPT = ("type", "reason", "message", "lastTimestamp", "eventTime", "series", "count")


def _kept(event: dict[str, Any]) -> dict[str, Any]:
    involved = event.get("involvedObject") or {}
    return {
        "metadata": {"namespace": (event.get("metadata") or {}).get("namespace")},
        "involvedObject": {k: involved.get(k) for k in ("namespace", "name", "uid")},
        **{k: event[k] for k in _KEPT if event.get(k) is not None},
    }


def inference_service_of_pod(pod: str) -> str:
    """The InferenceService whose predictor runs ``pod`` (by KServe's names), or "" for another Pod."""
    deployment = pod.rsplit("-", 2)[0] if pod.count("-") >= 2 else ""
    return deployment.removesuffix(_PREDICTOR) if deployment.endswith(_PREDICTOR) else ""


class KServeWarnings:
    """``on_warning`` gets (namespace, InferenceService name) for each new or repeated Warning Event."""

    def __init__(self, api_client: k8s.ApiClient, namespaces: Sequence[str], on_warning: Callable[[Key], None]) -> None:
        core = k8s.CoreV1Api(api_client)

        def lister(namespace: str, selector: str) -> Callable[..., Any]:
            def call(**kwargs: Any) -> Any:
                if namespace:
                    return core.list_namespaced_event(namespace, field_selector=selector, **kwargs)
                return core.list_event_for_all_namespaces(field_selector=selector, **kwargs)

            call.__name__ = "list_inference_service_warnings" if selector == FIELD_SELECTOR else "list_pod_backoffs"
            return call

        def changed(kind: str, event: dict[str, Any]) -> None:
            involved = event.get("involvedObject") or {}
            if kind != "DELETED" and involved.get("name"):
                on_warning((str(involved.get("namespace") or ""), str(involved["name"])))

        def pod_changed(kind: str, event: dict[str, Any]) -> None:
            involved = event.get("involvedObject") or {}
            name = inference_service_of_pod(str(involved.get("name") or ""))
            if kind != "DELETED" and name and "storage-initializer" in str(event.get("message") or ""):
                on_warning((str(involved.get("namespace") or ""), name))

        def watches(name: str, selector: str, on_change: Callable[[str, dict[str, Any]], None]) -> list[WatchCache]:
            return [
                WatchCache(
                    f"{name}-{namespace or 'all'}",
                    lister(namespace, selector),
                    api_client.sanitize_for_serialization,
                    transform=_kept,
                    on_change=on_change,
                )
                for namespace in (namespaces or ("",))
            ]

        self._caches = watches("kserve-warnings", FIELD_SELECTOR, changed)  # what about() reads
        self._pod_caches = watches("pod-backoffs", POD_FIELD_SELECTOR, pod_changed)

    def start(self) -> KServeWarnings:
        for cache in (*self._caches, *self._pod_caches):
            cache.start()
        return self

    def stop(self) -> None:
        for cache in (*self._caches, *self._pod_caches):
            cache.stop()

    def about(self, child: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The Warning Events about this very InferenceService (``events_about``)."""
        return events_about((event for cache in self._caches for event in cache.values()), child)


def events_about(events: Iterable[Mapping[str, Any]], child: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Events stored in ``child``'s own namespace that name it by namespace, name and uid (its uid: not a deleted
    one of the same name). Anyone who may write Events in a namespace writes any involvedObject there, and every uid
    is readable: matched by uid alone, an editor's Warning in her own namespace, naming another team's
    InferenceService by its uid, became that model's ServingReady message (threat model, Events)."""
    metadata = child.get("metadata") or {}
    uid, namespace, name = metadata.get("uid"), metadata.get("namespace"), metadata.get("name")
    if not (uid and namespace and name):
        return []
    return [
        dict(event)
        for event in events
        if (event.get("metadata") or {}).get("namespace") == namespace
        and {k: (event.get("involvedObject") or {}).get(k) for k in ("namespace", "name", "uid")}
        == {"namespace": namespace, "name": name, "uid": uid}
    ]
