"""The verification cache keys on what verification depends on, caches only deterministic failures, and the
deadline turns a hung verification into a denial that is never cached."""

from __future__ import annotations

import threading

import pytest

from devmlops.adapters.verifycache import CachingVerifier, DeadlineVerifier
from devmlops.core.policy import Authority
from devmlops.core.ports import SignedModel, VerificationFailed, VerificationUnavailable

KEY_A = Authority(name="a", kind="key", public_key="-----BEGIN PUBLIC KEY-----A")
KEY_B = Authority(name="a", kind="key", public_key="-----BEGIN PUBLIC KEY-----B")
SIGNED = SignedModel(model_name="m", digest="sha256:" + "1" * 64, files=(), signer="a")


class Scripted:
    def __init__(self, *outcomes: SignedModel | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        self.calls += 1
        return "a"


def test_a_pass_is_served_from_the_cache_for_the_same_bundle_and_authority() -> None:
    events: list[str] = []
    inner = Scripted(SIGNED)
    cache = CachingVerifier(inner, on_event=events.append)
    assert cache.verify_model("bundle", KEY_A) is SIGNED
    assert cache.verify_model("bundle", KEY_A) is SIGNED
    assert inner.calls == 1
    assert events == ["miss", "hit"]


def test_another_bundle_or_changed_trust_material_is_a_miss() -> None:
    inner = Scripted(SIGNED, SIGNED, SIGNED)
    cache = CachingVerifier(inner)
    cache.verify_model("bundle", KEY_A)
    cache.verify_model("bundle2", KEY_A)
    cache.verify_model("bundle", KEY_B)
    assert inner.calls == 3


def test_a_deterministic_failure_is_cached_negatively() -> None:
    events: list[str] = []
    inner = Scripted(VerificationFailed("bad signature"))
    cache = CachingVerifier(inner, on_event=events.append)
    for _ in range(2):
        with pytest.raises(VerificationFailed, match="bad signature"):
            cache.verify_model("bundle", KEY_A)
    assert inner.calls == 1
    assert events == ["miss", "negative_hit"]


def test_a_transient_error_is_never_cached() -> None:
    inner = Scripted(VerificationUnavailable("timed out"), SIGNED)
    cache = CachingVerifier(inner)
    with pytest.raises(VerificationUnavailable):
        cache.verify_model("bundle", KEY_A)
    assert cache.verify_model("bundle", KEY_A) is SIGNED
    assert inner.calls == 2


def test_the_cache_is_bounded() -> None:
    events: list[str] = []
    cache = CachingVerifier(Scripted(*[SIGNED] * 5), max_entries=2, on_event=events.append)
    for index in range(5):
        cache.verify_model(f"bundle-{index}", KEY_A)
    assert events.count("evicted") == 3


def test_a_verification_past_its_deadline_is_unavailable_not_passed() -> None:
    release = threading.Event()

    class Hanging(Scripted):
        def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
            release.wait(5)
            return SIGNED

    deadline = DeadlineVerifier(Hanging(), seconds=0.1)
    try:
        with pytest.raises(VerificationUnavailable, match=r"timed out after 0.1s"):
            deadline.verify_model("bundle", KEY_A)
    finally:
        release.set()
        deadline.close()
