"""What the certificate keeper must do next, decided from the current Secrets and the time (no I/O here).

The order keeps every admission answered through a rotation: a new CA first joins the caBundle next to the old
one; the serving certificate is re-issued from it only after the API server had time to see that bundle
(``propagation``); the old CA leaves the bundle only after ``overlap``, by when every webhook replica has reloaded
the new serving certificate (the kubelet's Secret sync plus the webhook's reload interval).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

__all__ = [
    "CaState",
    "CertPolicy",
    "ServingState",
    "ca_action",
    "serving_action",
    "serving_lifetime",
    "signed_by",
    "trusted_bundle",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CertPolicy:
    """Lifetimes and margins (checked against the one-year maximum where certificates are made)."""

    validity: dt.timedelta
    renew_before: dt.timedelta
    ca_validity: dt.timedelta
    ca_renew_before: dt.timedelta
    overlap: dt.timedelta
    propagation: dt.timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class CaState:
    """The CA Secret as read: the current CA, the previous one while it is still trusted, and the bookkeeping."""

    cert: x509.Certificate | None
    previous: x509.Certificate | None = None
    introduced_at: dt.datetime | None = None  # when the current CA entered the caBundle
    previous_until: dt.datetime | None = None  # the previous CA leaves the bundle then
    rotation_requested: str = ""  # devmlops.io/rotate on the Secret, set by a person
    rotation_handled: str = ""  # the last request acted on


@dataclass(frozen=True, slots=True, kw_only=True)
class ServingState:
    """The serving certificate in the webhook's TLS Secret (None: missing or unreadable)."""

    cert: x509.Certificate | None


def ca_action(state: CaState, policy: CertPolicy, now: dt.datetime) -> str:
    """``create`` (none or unreadable), ``rotate`` (expiring or asked for), ``drop-previous`` or ``keep``."""
    if state.cert is None:
        return "create"
    if state.rotation_requested and state.rotation_requested != state.rotation_handled:
        return "rotate"
    if state.cert.not_valid_after_utc - now <= policy.ca_renew_before:
        return "rotate"
    if state.previous is not None and (state.previous_until is None or now >= state.previous_until):
        return "drop-previous"
    return "keep"


def serving_action(
    serving: ServingState, ca: CaState, hosts: Sequence[str], policy: CertPolicy, now: dt.datetime
) -> str:
    """``issue`` a new serving certificate, ``wait`` for the new CA to propagate, or ``keep``."""
    cert = serving.cert
    if cert is None or ca.cert is None:
        return "issue"
    if set(_hosts(cert)) != set(hosts) or cert.not_valid_after_utc - now <= policy.renew_before:
        return "issue"
    if cert.not_valid_after_utc > ca.cert.not_valid_after_utc:
        return "issue"  # never outlive the CA
    if cert.issuer == ca.cert.subject and signed_by(cert, ca.cert):
        return "keep"
    # Signed by the previous CA: keep serving it until the API server has had time to trust the new one.
    if ca.previous is not None and signed_by(cert, ca.previous) and cert.not_valid_after_utc > now:
        introduced = ca.introduced_at or now
        return "wait" if now - introduced < policy.propagation else "issue"
    return "issue"


def serving_lifetime(ca: x509.Certificate, policy: CertPolicy, now: dt.datetime) -> dt.timedelta:
    """The configured validity, cut so that the certificate ends a minute before its CA does."""
    return min(policy.validity, ca.not_valid_after_utc - now - dt.timedelta(minutes=1))


def trusted_bundle(ca: CaState) -> bytes:
    """The PEM bundle the webhook configurations must carry: the current CA, then the previous one if any."""
    certs = [c for c in (ca.cert, ca.previous) if c is not None]
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _hosts(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans]


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer``'s key signed ``cert`` (and the names chain up)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
