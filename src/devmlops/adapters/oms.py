"""OpenSSF model-signing (OMS) bundles verified cryptographically without the model bytes.

This is the one module that touches ``model_signing``'s private signing layer (``model_signing._signing``): it
verifies a bundle in milliseconds and returns the signed manifest, where the public API would re-hash the model.
The version range is pinned in pyproject.toml and ``tests/unit/adapters/test_oms.py`` fails loudly if the
private API moves. Every library error becomes a ``VerificationFailed`` with a reason a person can act on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing._signing import sign_certificate, sign_ec_key, sign_sigstore_pb, signing
from sigstore import models as sigstore_models
from sigstore.errors import Error as SigstoreError
from sigstore.verify import Verifier as SigstoreVerifier
from sigstore.verify import policy as sigstore_policy

from devmlops.core.policy import Authority
from devmlops.core.ports import SignedModel, VerificationFailed, VerificationUnavailable

__all__ = ["OmsVerifier", "public_good_trust_config", "signed_model_from_payload"]

_T = TypeVar("_T")
_IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
_IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"


_MATERIAL = {
    "publicKey": "a public key",
    "x509CertificateChain": "a certificate chain",
    "certificate": "a Sigstore certificate",
}
_EXPECTED = {"key": "a public key", "certificateChain": "a certificate chain", "keyless": "a Sigstore certificate"}


class _Text:
    """Duck-types the ``pathlib.Path`` reads the library makes, so bundles and keys never touch the disk."""

    def __init__(self, text: str) -> None:
        self._text = text

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._text

    def read_bytes(self) -> bytes:
        return self._text.encode()


_PUBLIC_GOOD: sigstore_models.ClientTrustConfig | None = None
_PUBLIC_GOOD_LOCK = threading.Lock()


def public_good_trust_config() -> sigstore_models.ClientTrustConfig:
    """The public-good Sigstore trust root embedded in ``sigstore``, loaded offline (no TUF refresh)."""
    global _PUBLIC_GOOD
    with _PUBLIC_GOOD_LOCK:
        if _PUBLIC_GOOD is None:
            try:
                _PUBLIC_GOOD = sigstore_models.ClientTrustConfig.production(offline=True)
            except Exception as exc:  # TUF cache errors surface as many types
                raise VerificationUnavailable(f"the embedded Sigstore trust root could not be loaded: {exc}") from exc
        return _PUBLIC_GOOD


def signed_model_from_payload(payload: bytes, signer: str) -> SignedModel:
    """Check the in-toto statement and manifest consistency (the root digest covers the file digests)."""
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise VerificationFailed(f"the DSSE payload is not JSON: {exc}") from exc
    if not isinstance(statement, dict) or statement.get("_type") != _IN_TOTO_STATEMENT:
        found = statement.get("_type") if isinstance(statement, dict) else type(statement).__name__
        raise VerificationFailed(f"payload type: got {found!r}, expected an in-toto statement ({_IN_TOTO_STATEMENT})")
    try:
        manifest = signing.dsse_payload_to_manifest(statement)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise VerificationFailed(f"the signed manifest is malformed or inconsistent: {exc}") from exc
    files = tuple(
        (descriptor.identifier, f"{descriptor.digest.algorithm}:{descriptor.digest.digest_hex}")
        for descriptor in manifest.resource_descriptors()
    )
    subjects = statement.get("subject") or []
    root = subjects[0].get("digest", {}).get("sha256") if len(subjects) == 1 else None
    if not root:  # pre-1.0 payloads name files as subjects: derive the root the 1.0 way
        root = hashlib.sha256(b"".join(bytes.fromhex(d.removeprefix("sha256:")) for _n, d in files)).hexdigest()
    return SignedModel(
        model_name=manifest.model_name,
        digest=f"sha256:{root}",
        files=files,
        signer=signer,
        predicate_type=str(statement.get("predicateType", "")),
        serialization=dict(manifest.serialization_type),
    )


class _RegexpIdentity:
    """A Sigstore policy: the issuer matches exactly and one SAN matches the regular expression in full."""

    def __init__(self, pattern: str, issuer: str) -> None:
        self._pattern = re.compile(pattern)
        self._issuer = sigstore_policy.OIDCIssuer(issuer)

    def verify(self, cert: x509.Certificate) -> None:
        self._issuer.verify(cert)
        sans = _sans(cert)
        if not any(self._pattern.fullmatch(san) for san in sans):
            raise VerificationFailed(f"certificate identities {sorted(sans)} do not match /{self._pattern.pattern}/")


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    values = set(ext.get_values_for_type(x509.RFC822Name)) | set(
        ext.get_values_for_type(x509.UniformResourceIdentifier)
    )
    return values | {other.value.decode(errors="replace") for other in ext.get_values_for_type(x509.OtherName)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class OmsVerifier:
    """The ``SignatureVerifier`` port over model_signing and sigstore; verifiers are built once per authority."""

    def __init__(self) -> None:
        self._keyless: dict[str, SigstoreVerifier] = {}
        self._lock = threading.Lock()

    # -- model bundles -------------------------------------------------------------------------------------
    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        self._check_material(bundle, authority)
        if authority.kind == "keyless":
            return self._verify_model_keyless(bundle, authority)
        signature = self._guard(lambda: sign_sigstore_pb.Signature.read(_Text(bundle)), "bundle")  # type: ignore[arg-type]
        if authority.kind == "key":
            verifier: Any = self._guard(lambda: sign_ec_key.Verifier(_Text(authority.public_key)), "public key")  # type: ignore[arg-type]
            signer = f"key {_key_fingerprint(authority.public_key)}"
        else:
            verifier = self._guard(
                lambda: sign_certificate.Verifier([_Text(authority.certificates)]),  # type: ignore[list-item]
                "certificate chain",
            )
            signer = _leaf_subject(signature)
        payload_type, payload = self._guard(lambda: verifier._verify_signed_content(signature), "signature")
        self._check_payload_type(payload_type)
        return signed_model_from_payload(payload, signer)

    def _verify_model_keyless(self, bundle: str, authority: Authority) -> SignedModel:
        parsed = self._guard(lambda: sigstore_models.Bundle.from_json(bundle), "Sigstore bundle")
        verifier = self._keyless_verifier(authority)
        policy = self._identity_policy(authority)
        payload_type, payload = self._guard(lambda: verifier.verify_dsse(bundle=parsed, policy=policy), "signature")
        self._check_payload_type(payload_type)
        signer = ", ".join(sorted(_sans(parsed.signing_certificate))) + f" ({authority.issuer})"
        return signed_model_from_payload(payload, signer)

    # -- plain bundles over one artifact -------------------------------------------------------------------
    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        self._check_material(bundle, authority)
        if authority.kind == "keyless":
            parsed = self._guard(lambda: sigstore_models.Bundle.from_json(bundle), "Sigstore bundle")
            verifier = self._keyless_verifier(authority)
            policy = self._identity_policy(authority)
            self._guard(lambda: verifier.verify_artifact(artifact, parsed, policy), "signature")
            return ", ".join(sorted(_sans(parsed.signing_certificate))) + f" ({authority.issuer})"
        document = json.loads(bundle)
        message = document.get("messageSignature") if isinstance(document, dict) else None
        if not isinstance(message, dict) or "signature" not in message:
            raise VerificationFailed("bundle has no messageSignature: expected a Sigstore bundle over one artifact")
        digest = (message.get("messageDigest") or {}).get("digest")
        if digest and base64.b64decode(digest) != hashlib.sha256(artifact).digest():
            raise VerificationFailed("the bundle's message digest does not match the artifact's SHA-256")
        if authority.kind == "key":
            key: Any = self._guard(
                lambda: serialization.load_pem_public_key(authority.public_key.encode()), "public key"
            )
            signer = f"key {_key_fingerprint(authority.public_key)}"
        else:
            pb = self._guard(lambda: sign_sigstore_pb.Signature.read(_Text(bundle)), "bundle")  # type: ignore[arg-type]
            chain_verifier = sign_certificate.Verifier([_Text(authority.certificates)])  # type: ignore[list-item]
            key = self._guard(
                lambda: chain_verifier._verify_certificates(pb.bundle.verification_material), "certificate chain"
            )
            signer = _leaf_subject(pb)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise VerificationFailed("only elliptic-curve keys are supported for SBOM signatures")
        try:
            key.verify(base64.b64decode(message["signature"]), artifact, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError) as exc:
            raise VerificationFailed("the signature over the artifact does not verify for this key") from exc
        return signer

    # -- helpers -------------------------------------------------------------------------------------------
    def _keyless_verifier(self, authority: Authority) -> SigstoreVerifier:
        version = authority.trust_root_version
        with self._lock:
            cached = self._keyless.get(version)
        if cached is not None:
            return cached
        if authority.trust_config:
            config = self._guard(
                lambda: sigstore_models.ClientTrustConfig.from_json(authority.trust_config), "trustConfig"
            )
        else:
            config = public_good_trust_config()
        verifier = self._guard(lambda: SigstoreVerifier(trusted_root=config.trusted_root), "trust root")
        with self._lock:
            self._keyless[version] = verifier
        return verifier

    @staticmethod
    def _identity_policy(authority: Authority) -> Any:
        if authority.identity_regexp:
            return _RegexpIdentity(authority.identity_regexp, authority.issuer)
        return sigstore_policy.Identity(identity=authority.identity, issuer=authority.issuer)

    @staticmethod
    def _check_material(bundle: str, authority: Authority) -> None:
        """Say plainly when the bundle was made for another kind of authority than this one."""
        try:
            document = json.loads(bundle)
        except ValueError as exc:
            raise VerificationFailed(f"signature bundle is not valid JSON: {exc}") from exc
        material = document.get("verificationMaterial") if isinstance(document, dict) else None
        if not isinstance(material, dict):
            raise VerificationFailed("signature bundle has no verificationMaterial: expected a Sigstore bundle")
        found = next((_MATERIAL[key] for key in _MATERIAL if key in material), "unknown material")
        expected = _EXPECTED[authority.kind]
        older_keyless = authority.kind == "keyless" and "x509CertificateChain" in material  # bundles before v0.3
        if found != expected and not older_keyless:
            raise VerificationFailed(
                f"bundle is signed with {found}, but authority {authority.name} expects {expected}"
            )

    @staticmethod
    def _check_payload_type(payload_type: str) -> None:
        if payload_type != _IN_TOTO_PAYLOAD:
            raise VerificationFailed(f"DSSE payload type: got {payload_type!r}, expected {_IN_TOTO_PAYLOAD!r}")

    @staticmethod
    def _guard(action: Callable[[], _T], what: str) -> _T:
        """Run a library call; any failure of it is a deterministic verification failure naming ``what``."""
        try:
            return action()
        except VerificationFailed:
            raise
        except (SigstoreError, ValueError, KeyError, TypeError, AttributeError, IndexError, InvalidSignature) as exc:
            raise VerificationFailed(f"{what} rejected: {_first_line(exc)}") from exc
        except Exception as exc:  # pyOpenSSL and protobuf raise their own types
            if type(exc).__module__.split(".")[0] in (
                "OpenSSL",
                "google",
                "sigstore_models",
                "pydantic",
                "pydantic_core",
            ):
                raise VerificationFailed(f"{what} rejected: {_first_line(exc)}") from exc
            raise


def _key_fingerprint(pem: str) -> str:
    return "sha256:" + hashlib.sha256(pem.strip().encode()).hexdigest()[:16]


def _leaf_subject(signature: Any) -> str:
    try:
        raw = signature.bundle.verification_material.x509_certificate_chain.certificates[0].raw_bytes
        return str(x509.load_der_x509_certificate(raw).subject.rfc4514_string())
    except (AttributeError, IndexError, ValueError, TypeError):
        return "certificate (no readable subject)"
