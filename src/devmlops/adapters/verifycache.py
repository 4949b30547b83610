"""Verification results cached by what they depend on, and a deadline around each verification.

The key is the bundle's SHA-256, the authority's trust material (from the compiled policy revision) and the trust
root version: never a tag or a URI. ``spec.model.digest`` is compared with the result on every request, so a
cached pass cannot be reused for another digest or storage URI. Only deterministic failures are cached; timeouts
and unavailable trust roots are not.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from devmlops.core.attestation import VerifiedAttestation
from devmlops.core.policy import Authority
from devmlops.core.ports import SignatureVerifier, SignedModel, VerificationFailed, VerificationUnavailable
from devmlops.errors import DevmlopsError

__all__ = ["CachingVerifier", "DeadlineVerifier"]

_T = TypeVar("_T")
_Key = tuple[str, str, str, str]


class CachingVerifier:
    def __init__(
        self, inner: SignatureVerifier, *, max_entries: int = 4096, on_event: Callable[[str], None] = lambda _e: None
    ) -> None:
        self._inner = inner
        self._max = max_entries
        self._on_event = on_event
        self._entries: OrderedDict[_Key, SignedModel | VerifiedAttestation | str | VerificationFailed] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, kind: str, payload: str, authority: Authority) -> _Key:
        digest = hashlib.sha256(payload.encode()).hexdigest()
        return (kind, digest, authority.fingerprint, authority.trust_root_version)

    def _cached(self, key: _Key, compute: Callable[[], _T]) -> _T:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
        if hit is not None:
            if isinstance(hit, VerificationFailed):
                self._on_event("negative_hit")
                raise hit
            self._on_event("hit")
            return hit  # type: ignore[return-value]
        try:
            value: SignedModel | VerifiedAttestation | str | VerificationFailed = compute()  # type: ignore[assignment]
        except VerificationFailed as exc:
            value = exc
        except DevmlopsError:
            self._on_event("miss")  # the verifier ran and could not answer: a miss, not cached
            raise
        # A miss is counted once the verifier has run: a verifier that declines to run here (the webhook's inline
        # guard, whose WouldBlock is no DevmlopsError) is asked again elsewhere, where the miss is counted.
        self._on_event("miss")
        self._store(key, value)
        if isinstance(value, VerificationFailed):
            raise value
        return value  # type: ignore[return-value]

    def _store(self, key: _Key, value: SignedModel | VerifiedAttestation | str | VerificationFailed) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
                self._on_event("evicted")

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        return self._cached(self._key("model", bundle, authority), lambda: self._inner.verify_model(bundle, authority))

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        payload = hashlib.sha256(artifact).hexdigest() + bundle
        return self._cached(
            self._key("blob", payload, authority), lambda: self._inner.verify_blob(artifact, bundle, authority)
        )

    def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        return self._cached(
            self._key("attestation", bundle, authority), lambda: self._inner.verify_attestation(bundle, authority)
        )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class DeadlineVerifier:
    """Give up on a verification after ``seconds``; the caller denies with that reason (fail closed)."""

    def __init__(self, inner: SignatureVerifier, *, seconds: float, workers: int = 4) -> None:
        self._inner = inner
        self._seconds = seconds
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")

    def _run(self, action: Callable[[], _T], what: str) -> _T:
        future = self._pool.submit(action)
        try:
            return future.result(timeout=self._seconds)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise VerificationUnavailable(f"{what} timed out after {self._seconds:g}s") from exc

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        return self._run(lambda: self._inner.verify_model(bundle, authority), "signature verification")

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        return self._run(lambda: self._inner.verify_blob(artifact, bundle, authority), "SBOM signature verification")

    def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        return self._run(lambda: self._inner.verify_attestation(bundle, authority), "attestation verification")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
