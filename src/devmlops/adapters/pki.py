"""Certificates made with ``cryptography``: a CA and the serving certificates it signs.

kopf's own self-signed helper pulls ``oscrypto``, which fails on this OpenSSL, so both the local control plane
and the webhook get their TLS material here. Lifetimes are short on purpose (never above a year).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["MAX_VALIDITY", "CertificateAuthority", "KeyPair", "generate_ec_key", "new_ca", "new_signing_key"]

MAX_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate (or public key) and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.crt`` and ``stem.key`` (mode 0600) atomically; return both paths."""
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        _atomic_write(key_path, self.key_pem, mode=0o600)
        _atomic_write(cert_path, self.cert_pem, mode=0o644)
        return cert_path, key_path


def _atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def generate_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_signing_key() -> KeyPair:
    """A bare P-256 key pair (public key PEM in ``cert_pem``), e.g. for service-account token signing."""
    key = generate_ec_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyPair(public, _private_pem(key))


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validity(now: dt.datetime, lifetime: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    if lifetime > MAX_VALIDITY:
        raise ValueError(f"certificate lifetime {lifetime} exceeds the maximum of {MAX_VALIDITY}")
    return now - dt.timedelta(minutes=5), now + lifetime


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA that issues serving and client certificates."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """Load a CA kept elsewhere (e.g. in a Secret); raises ``ValueError`` on anything but a P-256 CA pair."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise ValueError("the CA key is not an EC key matching the CA certificate")
        return cls(key=key, cert=cert)

    @property
    def pair(self) -> KeyPair:
        return KeyPair(self.cert_pem, _private_pem(self.key))

    def issue(
        self,
        common_name: str,
        *,
        hosts: Sequence[str] = (),
        organizations: Sequence[str] = (),
        client: bool = False,
        lifetime: dt.timedelta = dt.timedelta(days=30),
        now: dt.datetime | None = None,
    ) -> KeyPair:
        """A leaf certificate for ``hosts`` (DNS names or IPs), for serving or, with ``client``, for a client."""
        key = generate_ec_key()
        not_before, not_after = _validity(now or dt.datetime.now(dt.UTC), lifetime)
        name = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
            + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        )
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _private_pem(key))


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures always; certificate and CRL signing only for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=False,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def new_ca(
    common_name: str,
    *,
    lifetime: dt.timedelta = dt.timedelta(days=365),
    now: dt.datetime | None = None,
    path_length: int = 0,
) -> CertificateAuthority:
    """A self-signed CA (P-256) valid for at most a year."""
    key = generate_ec_key()
    not_before, not_after = _validity(now or dt.datetime.now(dt.UTC), lifetime)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)
