"""Deciding on the event loop when nothing in the decision can wait.

Most reviews are decided from what is already in memory: the watch caches, the compiled policies and the cache of
verification results. Handing such a decision to a thread pool and back costs more than the decision (a thread
hop, a future, and the GIL passed twice), so the webhook first tries it on the event loop with ``deciding_inline()``
set. Everything that could wait (an OPA query, a Kubernetes API read, a registry lookup, a keyless verification) is
wrapped by a guard below that raises ``WouldBlock`` instead while that flag is set; the webhook then decides the
review again in the pool, under its deadline, as before. Nothing is cached at this level: an inline decision is the
same ``decide()`` over the same inputs, only without the hop.

A signature verification that cannot wait is made inline too: a key or a certificate chain (the trust material is
in the policy: no file, no network) over a bundle of at most ``INLINE_VERIFY_MAX_BYTES``. It is CPU work bounded by
the bundle's size (about 0.2 ms for a one-file model, 1.5 ms at the bound), less than the two thread hops it saves
with the GIL contended (docs/benchmarks.md: a cold review's server CPU about halved). Larger bundles and
keyless identities still go to the pool, under the verification deadline.

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
    "INLINE_VERIFY_MAX_BYTES",
    "InlineGuardEngine",
    "InlineGuardRegistry",
    "InlineGuardVerifier",
    "WouldBlock",
    "deciding_inline",
    "inline_only",
]

_INLINE: ContextVar[bool] = ContextVar("devmlops_deciding_inline", default=False)
# A bundle (with its artifact, for a blob) up to this size is verified on the event loop for a key or a certificate
# chain: bounded CPU, no I/O. A crafted bundle costs more per byte than an honest one; at this bound it still holds
# the loop for milliseconds, not more.
INLINE_VERIFY_MAX_BYTES = 16 * 1024
_INLINE_KINDS = frozenset({"key", "certificateChain"})


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
    """Put between a verification cache and the verifier: a cache hit is answered inline; a miss is verified inline
    by ``direct`` when it is small and needs no I/O (module docstring), otherwise it raises ``WouldBlock``. Outside
    an inline decision every verification goes to ``pooled`` (the deadline and its pool). Without ``direct`` no
    miss is verified inline."""

    def __init__(
        self,
        pooled: SignatureVerifier,
        direct: SignatureVerifier | None = None,
        *,
        max_inline_bytes: int = INLINE_VERIFY_MAX_BYTES,
    ) -> None:
        self._pooled = pooled
        self._direct = direct
        self._max = max_inline_bytes

    def _route(self, what: str, size: int, authority: Authority) -> SignatureVerifier:
        if not _INLINE.get():
            return self._pooled
        if self._direct is not None and size <= self._max and authority.kind in _INLINE_KINDS:
            return self._direct
        raise WouldBlock(what)

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        return self._route("signature verification", len(bundle), authority).verify_model(bundle, authority)

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        route = self._route("SBOM signature verification", len(artifact) + len(bundle), authority)
        return route.verify_blob(artifact, bundle, authority)

    def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        return self._route("attestation verification", len(bundle), authority).verify_attestation(bundle, authority)


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
