"""Registry lookups bounded in time and cached for a short while.

Admission must not wait on the network beyond one bounded lookup: ``DeadlineRegistry`` gives a lookup
``seconds`` and answers with an error after that (the registry gate denies, fail closed). ``CachingRegistry``
keeps successful resolutions for ``ttl_seconds``, keyed by model name and the version or alias asked for. The TTL
is short on purpose: an alias can move and a forbidden tag can be added at any time, and a cached answer hides
that until it expires (docs/policies.md says so). Failures are never cached: the next admission asks again.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from devmlops.core.evidence import RegistryVersion
from devmlops.core.gates.registry import requested
from devmlops.core.manifests import MlflowRef

__all__ = ["CachingRegistry", "DeadlineRegistry", "RegistryResolver", "mlflow_resolver"]


class RegistryResolver(Protocol):
    label: str

    def resolve(self, ref: MlflowRef) -> RegistryVersion: ...


class DeadlineRegistry:
    """Give up on a lookup after ``seconds``; the answer is an error result, never a pass."""

    def __init__(self, inner: RegistryResolver, *, seconds: float, workers: int = 4) -> None:
        self.label = inner.label
        self._inner = inner
        self._seconds = seconds
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registry")

    def resolve(self, ref: MlflowRef) -> RegistryVersion:
        future = self._pool.submit(self._inner.resolve, ref)
        try:
            return future.result(timeout=self._seconds)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return RegistryVersion(
                registry=self.label,
                name=ref.name,
                requested=requested(ref),
                error=f"lookup timed out after {self._seconds:g}s",
            )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_Key = tuple[str, str, str]


class CachingRegistry:
    """Successful resolutions for ``ttl_seconds`` (``clock`` is monotonic seconds); at most ``max_entries``."""

    def __init__(
        self,
        inner: RegistryResolver,
        *,
        ttl_seconds: float,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str], None] = lambda _e: None,
    ) -> None:
        self.label = inner.label
        self._inner = inner
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._on_event = on_event
        self._entries: OrderedDict[_Key, tuple[float, RegistryVersion]] = OrderedDict()
        self._lock = threading.Lock()

    def resolve(self, ref: MlflowRef) -> RegistryVersion:
        key = (ref.name, ref.version or "", ref.alias or "")
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] > now:
                self._entries.move_to_end(key)
                self._on_event("hit")
                return hit[1]
        self._on_event("miss")
        found = self._inner.resolve(ref)
        if found.error:
            return found
        with self._lock:
            self._entries[key] = (now + self._ttl, found)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def mlflow_resolver(
    tracking_uri: str | None,
    *,
    timeout_seconds: float,
    ttl_seconds: float,
    guard: Callable[[RegistryResolver], RegistryResolver] = lambda inner: inner,
    on_event: Callable[[str], None] = lambda _e: None,
) -> CachingRegistry | None:
    """The chain every shell uses: cache, ``guard`` (the webhook's inline guard), deadline, MLflow; None without a
    tracking URI (a ModelDeployment naming a registry is then denied: no registry is configured)."""
    if not tracking_uri:
        return None
    from devmlops.adapters.mlflowregistry import MlflowRegistry

    inner = DeadlineRegistry(MlflowRegistry(tracking_uri, request_timeout=timeout_seconds), seconds=timeout_seconds)
    return CachingRegistry(guard(inner), ttl_seconds=ttl_seconds, on_event=on_event)
