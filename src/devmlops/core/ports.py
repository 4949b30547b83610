"""Protocols through which the pure core calls out, and the values and errors that cross them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from devmlops.core.policy import Authority
from devmlops.errors import DevmlopsError

if TYPE_CHECKING:
    from devmlops.core.attestation import VerifiedAttestation

__all__ = [
    "PolicyEngine",
    "PolicyEngineUnavailable",
    "RegoVerdict",
    "SignatureVerifier",
    "SignedModel",
    "VerificationFailed",
    "VerificationInternalError",
    "VerificationUnavailable",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedModel:
    """What a verified OMS signature says: the model, its root digest, its files, and who signed it."""

    model_name: str
    digest: str  # sha256:<hex> over the file digests, the in-toto subject
    files: tuple[tuple[str, str], ...]  # (path, sha256:<hex>)
    signer: str
    predicate_type: str = ""
    serialization: Mapping[str, Any] = field(default_factory=dict)  # how the signer hashed the files

    @property
    def signed_digests(self) -> frozenset[str]:
        """The root digest and every file digest, as ``sha256:<hex>``."""
        return frozenset({self.digest, *(digest for _name, digest in self.files)})


class VerificationFailed(DevmlopsError):
    """The bundle does not verify for this authority: a deterministic answer that may be cached."""


class VerificationUnavailable(DevmlopsError):
    """Verification could not run (timeout, missing trust root): never cached, always a denial."""


class VerificationInternalError(VerificationUnavailable):
    """Verification broke, not the bundle: a bug in devmlops or a verification library that changed under it. Like
    any unavailable verification it is never cached and always a denial; its message says "internal error"."""


class SignatureVerifier(Protocol):
    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        """Verify an OMS bundle cryptographically (no model bytes) and return its signed manifest."""
        ...

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        """Verify a plain Sigstore bundle over ``artifact``; return the signer's identity."""
        ...

    def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        """Verify a Sigstore bundle around a DSSE in-toto statement (evidence about a model) and return the
        statement, its predicate checked against its schema when it is one of devmlops's."""
        ...


@dataclass(frozen=True, slots=True)
class RegoVerdict:
    """What one Rego package said: ``deny`` messages deny, ``warn`` messages become warnings."""

    deny: tuple[str, ...] = ()
    warn: tuple[str, ...] = ()


class PolicyEngineUnavailable(DevmlopsError):
    """OPA is down, slow, or answered with an error: always a denial (fail closed), never cached."""


class PolicyEngine(Protocol):
    def evaluate(self, package: str, document: Mapping[str, Any]) -> RegoVerdict:
        """Evaluate ``data.<package>`` with ``document`` as input."""
        ...
