"""The webhook's namespace labels: from the watch cache, and for a namespace created a moment ago (the cache not
there yet) from the API server, so a policy selecting it by label applies at once instead of a spurious "no policy
selects" denial (seen as a flaky integration test: a namespace made, a policy installed, a model created)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kubecache import ClusterCaches


class Core:
    def __init__(self, labels: dict[str, str] | None) -> None:
        self.labels, self.reads = labels, 0

    def read_namespace(self, name: str, **_kwargs: Any) -> Any:
        self.reads += 1
        if self.labels is None:
            raise ApiException(status=404)
        return SimpleNamespace(metadata=SimpleNamespace(labels=self.labels))


def caches_with(core: Core) -> ClusterCaches:
    caches = ClusterCaches(k8s.ApiClient())  # watches not started: the cache has seen nothing
    caches._core = core  # type: ignore[assignment]
    return caches


def test_a_namespace_the_cache_has_not_seen_is_read_from_the_api_server() -> None:
    core = Core({"kubernetes.io/metadata.name": "team-a", "devmlops.io/enforce": "true"})
    assert caches_with(core).namespace_labels("team-a") == core.labels
    assert core.reads == 1


def test_an_unreadable_namespace_has_no_labels_and_no_namespace_is_never_read() -> None:
    core = Core(None)
    caches = caches_with(core)
    assert caches.namespace_labels("gone") == {}
    assert caches.namespace_labels("") == {}
    assert core.reads == 1
