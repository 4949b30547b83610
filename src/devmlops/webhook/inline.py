"""Deciding on the event loop when nothing in the decision can wait.

Most reviews are decided from what is already in memory: the watch caches, the compiled policies and the cache of
verification results. Handing such a decision to a thread pool and back costs more than the decision (a thread
hop, a future, and the GIL passed twice), so the webhook first tries it on the event loop with ``deciding_inline()``
set. Everything that could wait (a signature verification, an OPA query, a Kubernetes API read) is wrapped by a
guard below that raises ``WouldBlock`` instead while that flag is set; the webhook then decides the review again in
the pool, under its deadline, as before. Nothing is cached at this level: an inline decision is the same
``decide()`` over the same inputs, only without the hop.

A new adapter that can wait must be guarded the same way, or it would hold the event loop; the webhook logs a
warning for any inline decision slower than a few milliseconds to make such a miss visible.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from devmlops.adapters.registrycache import RegistryResolver
from devmlops.core.attestation import VerifiedAttestation
from devmlops.core.evidence import RegistryVersion
from devmlops.core.manifests import MlflowRef
from devmlops.core.policy import Authority
from devmlops.core.ports import PolicyEngine, RegoVerdict, SignatureVerifier, SignedModel

__all__ = [
    "InlineGuardEngine",
    "InlineGuardRegistry",
    "InlineGuardVerifier",
    "WouldBlock",
    "deciding_inline",
    "inline_only",
]

_INLINE: ContextVar[bool] = ContextVar("devmlops_deciding_inline", default=False)


class WouldBlock(Exception):
    """Raised instead of work that can wait while a decision runs on the event loop; the caller decides again in
    the pool. Deliberately not a ``DevmlopsError``: no gate catches it, so it always reaches the webhook."""


def inline_only() -> bool:
    """True while a decision runs on the event loop (context-local: pool threads never see it)."""
    return _INLINE.get()


@contextmanager
def deciding_inline() -> Iterator[None]:
    token = _INLINE.set(True)
    try:
        yield
    finally:
        _INLINE.reset(token)


class InlineGuardVerifier:
    """Put between a verification cache and the verifier: a cache hit is answered inline, a miss is not."""

    def __init__(self, inner: SignatureVerifier) -> None:
        self._inner = inner

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        if _INLINE.get():
            raise WouldBlock("signature verification")
        return self._inner.verify_model(bundle, authority)

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        if _INLINE.get():
            raise WouldBlock("SBOM signature verification")
        return self._inner.verify_blob(artifact, bundle, authority)

    def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        if _INLINE.get():
            raise WouldBlock("attestation verification")
        return self._inner.verify_attestation(bundle, authority)


class InlineGuardEngine:
    """An OPA query is a network round trip: never on the event loop."""

    def __init__(self, inner: PolicyEngine) -> None:
        self._inner = inner

    def evaluate(self, package: str, document: Mapping[str, Any]) -> RegoVerdict:
        if _INLINE.get():
            raise WouldBlock("OPA query")
        return self._inner.evaluate(package, document)


class InlineGuardRegistry:
    """Put between the registry cache and the lookup: a cached resolution is answered inline, a lookup is not."""

    def __init__(self, inner: RegistryResolver) -> None:
        self.label = inner.label
        self._inner = inner

    def resolve(self, ref: MlflowRef) -> RegistryVersion:
        if _INLINE.get():
            raise WouldBlock("model registry lookup")
        return self._inner.resolve(ref)
