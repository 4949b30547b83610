"""Keys, certificates, models and OMS signatures that the tests make themselves (no third-party fixture needed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from model_signing import signing

from devmlops.adapters.pki import new_ca


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path

    @property
    def public_pem(self) -> str:
        return self.public.read_text()


def make_key(directory: Path, stem: str = "signer") -> KeyFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / f"{stem}.key"
    public = directory / f"{stem}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return KeyFiles(private, public)


def make_model(directory: Path, files: dict[str, bytes] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {"weights.bin": b"\x00\x01" * 512, "config.json": b'{"layers": 2}'}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(content)
    return directory


def sign_with_key(model: Path, key: KeyFiles, signature: Path) -> str:
    signing.Config().use_elliptic_key_signer(private_key=key.private).set_hashing_config(
        _hashing(model, signature)
    ).sign(model, signature)
    return signature.read_text()


def _hashing(model: Path, signature: Path) -> object:
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[signature.name], ignore_git_paths=True)


@dataclass(frozen=True)
class CertChain:
    ca_pem: Path  # root + intermediate, as a policy would list them
    leaf_key: Path
    leaf_cert: Path
    chain: Path  # intermediate (what the signer ships besides the leaf)


def make_cert_chain(directory: Path) -> CertChain:
    """A root CA, an intermediate, and a code-signing leaf, all P-256."""
    now = dt.datetime.now(dt.UTC)
    # model_signing checks the chain at the leaf's notBefore: the CAs must already be valid then.
    root = new_ca("test-root", path_length=1, now=now - dt.timedelta(days=2))
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-intermediate")]))
        .issuer_name(root.cert.subject)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ml-release-signer")]))
        .issuer_name(inter.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(inter_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = CertChain(
        ca_pem=directory / "ca-chain.pem",
        leaf_key=directory / "leaf.key",
        leaf_cert=directory / "leaf.crt",
        chain=directory / "intermediate.pem",
    )
    files.ca_pem.write_bytes(root.cert_pem + inter.public_bytes(pem))
    files.chain.write_bytes(inter.public_bytes(pem))
    files.leaf_cert.write_bytes(leaf.public_bytes(pem))
    files.leaf_key.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def sign_with_certificate(model: Path, chain: CertChain, signature: Path) -> str:
    signing.Config().use_certificate_signer(
        private_key=chain.leaf_key, signing_certificate=chain.leaf_cert, certificate_chain=[chain.chain]
    ).set_hashing_config(_hashing(model, signature)).sign(model, signature)
    return signature.read_text()
