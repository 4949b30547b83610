"""Registry lookups: cached for their TTL only, failures never cached, bounded by a deadline, and never made on the
webhook's event loop (a cache hit is answered inline, a miss is decided in the pool). The real MLflow server is in
tests/integration/test_mlflow_registry.py; here the resolver behind the cache is a stand-in that counts calls."""

from __future__ import annotations

import threading

import pytest

from devmlops.adapters.registrycache import CachingRegistry, DeadlineRegistry
from devmlops.core.evidence import RegistryVersion
from devmlops.core.manifests import MlflowRef
from devmlops.webhook.inline import InlineGuardRegistry, WouldBlock, deciding_inline

CHAMPION = MlflowRef(name="iris", alias="champion")


class Counting:
    label = "MLflow test"

    def __init__(self, *, error: str = "", block: threading.Event | None = None) -> None:
        self.calls = 0
        self.error = error
        self.block = block

    def resolve(self, ref: MlflowRef) -> RegistryVersion:
        self.calls += 1
        if self.block is not None:
            self.block.wait(5)
        return RegistryVersion(
            registry=self.label, name=ref.name, requested="alias champion", version=str(self.calls), error=self.error
        )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_resolution_is_reused_within_its_ttl_and_looked_up_again_after() -> None:
    inner, clock, events = Counting(), Clock(), []
    cache = CachingRegistry(inner, ttl_seconds=30, clock=clock, on_event=events.append)
    assert cache.resolve(CHAMPION).version == "1"
    clock.now += 29.9
    assert cache.resolve(CHAMPION).version == "1"
    clock.now += 0.2
    assert cache.resolve(CHAMPION).version == "2"  # the alias may have moved: asked again
    assert inner.calls == 2
    assert events == ["miss", "hit", "miss"]  # devmlops_registry_lookups_total{event}


def test_an_alias_and_a_version_number_are_separate_entries() -> None:
    inner = Counting()
    cache = CachingRegistry(inner, ttl_seconds=30)
    cache.resolve(CHAMPION)
    cache.resolve(MlflowRef(name="iris", version="1"))
    assert inner.calls == 2


def test_a_failed_lookup_is_never_cached() -> None:
    inner = Counting(error="lookup failed: registry unreachable")
    cache = CachingRegistry(inner, ttl_seconds=30)
    assert cache.resolve(CHAMPION).error
    assert cache.resolve(CHAMPION).error
    assert inner.calls == 2


def test_a_lookup_past_its_deadline_is_an_error_naming_the_deadline() -> None:
    release = threading.Event()
    deadline = DeadlineRegistry(Counting(block=release), seconds=0.2)
    try:
        result = deadline.resolve(CHAMPION)
    finally:
        release.set()
        deadline.close()
    assert (result.registry, result.name, result.requested, result.error) == (
        "MLflow test",
        "iris",
        "alias champion",
        "lookup timed out after 0.2s",
    )


def test_on_the_event_loop_a_hit_is_answered_and_a_miss_would_block() -> None:
    inner = Counting()
    cache = CachingRegistry(InlineGuardRegistry(inner), ttl_seconds=30)
    with deciding_inline(), pytest.raises(WouldBlock):
        cache.resolve(CHAMPION)
    assert inner.calls == 0
    cache.resolve(CHAMPION)  # in the pool
    with deciding_inline():
        assert cache.resolve(CHAMPION).version == "1"
    assert inner.calls == 1
