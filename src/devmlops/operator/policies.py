"""The operator's view of the policies: one list + watch of ClusterModelPolicies and ModelPolicies, compiled once
per change (not listed and compiled again on every reconcile), and a flag the re-check loop follows so that a
burst of policy changes re-decides the ModelDeployments once, not once per change."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client as k8s

from devmlops.adapters.kubecache import policy_caches
from devmlops.adapters.policystore import PolicyStore
from devmlops.core.policy import PolicySet
from devmlops.errors import DevmlopsError

__all__ = ["PolicyWatch"]


class PolicyWatch:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._store = PolicyStore()
        self.changed = threading.Event()
        self._caches = policy_caches(api_client, self._apply)

    def _apply(self, event: str, obj: dict[str, Any]) -> None:
        self._store.apply(event, obj)
        self.changed.set()

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
