"""The operator's view of the policies: one list + watch of ClusterModelPolicies and ModelPolicies, compiled once
per change (not listed and compiled again on every reconcile), and a flag the re-check loop follows so that a
burst of policy changes re-decides the ModelDeployments once, not once per change."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from devmlops.adapters.kubecache import WatchCache
from devmlops.adapters.policystore import PolicyStore
from devmlops.core.policy import PolicySet
from devmlops.errors import DevmlopsError

__all__ = ["PolicyWatch"]

GROUP, VERSION = "devmlops.io", "v1alpha1"


class PolicyWatch:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        custom = k8s.CustomObjectsApi(api_client)
        self._store = PolicyStore()
        self.changed = threading.Event()

        def cluster(**kwargs: Any) -> Any:
            return custom.list_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", **kwargs)

        def team(**kwargs: Any) -> Any:
            return custom.list_custom_object_for_all_namespaces(GROUP, VERSION, "modelpolicies", **kwargs)

        cluster.__name__, team.__name__ = "list_clustermodelpolicies", "list_modelpolicies"
        self._caches = tuple(
            WatchCache(
                plural,
                lister,
                api_client.sanitize_for_serialization,
                on_change=self._applier(kind),
            )
            for plural, lister, kind in (
                ("clustermodelpolicies", cluster, "ClusterModelPolicy"),
                ("modelpolicies", team, "ModelPolicy"),
            )
        )

    def _applier(self, kind: str) -> Callable[[str, dict[str, Any]], None]:
        def apply(event: str, obj: dict[str, Any]) -> None:
            self._store.apply(event, {**obj, "kind": kind})
            self.changed.set()

        return apply

    def start(self) -> PolicyWatch:
        for cache in self._caches:
            cache.start()
        return self

    def stop(self) -> None:
        for cache in self._caches:
            cache.stop()

    def snapshot(self, *, timeout: float = 30.0) -> PolicySet:
        """The compiled policies, once both kinds have been listed: deciding on half a list could degrade a model
        that a policy not yet seen would admit."""
        if not all(cache.wait_synced(timeout) for cache in self._caches):
            raise DevmlopsError(f"policies not listed within {timeout:g}s; the reconcile is retried")
        return self._store.snapshot()
