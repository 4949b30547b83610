"""OpenSSF model-signing (OMS) bundles verified cryptographically without the model bytes.

model_signing's public verifier, ``model_signing.verifying.Config().verify(model_path, signature_path)``, always
re-hashes the model after checking the signature: the serving pod's job (``adapters/modelverify.py`` hashes with the
public ``model_signing.hashing``), not admission's, which checks a bundle against a digest in milliseconds. So:
- the signed statement is read by ``omsformat.py``, with model_signing's public ``manifest.SerializationType``;
- keyless bundles are verified with sigstore's public API (``sigstore.verify.Verifier.verify_dsse``);
- key and certificate-chain bundles still need model_signing's private signing layer, the same calls
  ``verifying.Config.verify`` makes before it hashes. Each one is listed in ``PRIVATE_API`` and pinned by
  ``tests/unit/adapters/test_oms.py`` (names, parameters, the version range in pyproject.toml; a test also fails if
  this module uses a private name not in the list):
  - ``sign_sigstore_pb.Signature.read``: reads a key or certificate bundle (protobuf-style, no tlog entries,
    which sigstore-python refuses), with model_signing's fixes for older bundles.
  - ``sign_ec_key.Verifier(...).verify`` and ``sign_certificate.Verifier(...).verify``: the ECDSA check over the
    DSSE envelope, chain validation, and model_signing's pre-1.0 signature compatibility. ``verify`` is the
    verifiers' documented method (``ValueError`` when a signature does not verify); the manifest it returns must
    equal the one ``omsformat`` read, or the result is an internal error.
  - ``sign_certificate.Verifier._verify_certificates``: the chain check for a certificate-signed SBOM bundle (a
    bundle over one artifact, which no model_signing verifier reads).
  - ``sign_sigstore_pb.Verifier._verify_signed_content``: the same key and chain checks for an evidence
    attestation, a DSSE envelope whose statement is not model_signing's (``verify`` would read it as a manifest).
  - ``sign_ec_key.Signer`` and ``sign_certificate.Signer`` (``.sign``): ``devmlops attest`` signs an attestation with
    the same key and certificate signers, and the same bundle layout, as ``devmlops sign`` signs a model; ``sign``
    reads only ``payload.statement.pb``, which an ``in_toto_attestation`` Statement provides.

Errors: only the failure types the libraries raise for bad input (``ValueError``, ``InvalidSignature``, sigstore's
``Error``, pyOpenSSL's errors) make a ``VerificationFailed``, the one result that may be cached. The shapes the
libraries read are checked first, so anything else raised here or inside them (AttributeError, TypeError, KeyError,
...) is a bug or an API change: a ``VerificationInternalError``, logged with its traceback, never cached, a denial
that says "internal error".
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing._signing import sign_certificate, sign_ec_key, sign_sigstore_pb
from OpenSSL import crypto as openssl_crypto
from sigstore import models as sigstore_models
from sigstore.errors import Error as SigstoreError
from sigstore.verify import Verifier as SigstoreVerifier
from sigstore.verify import policy as sigstore_policy

from devmlops.adapters.omsformat import (
    IN_TOTO_PAYLOAD,
    bundle_document,
    dsse_payload,
    leaf_certificate_der,
    message_signature,
    signed_model_from_payload,
)
from devmlops.adapters.predicates import read_statement
from devmlops.core.attestation import VerifiedAttestation
from devmlops.core.policy import Authority
from devmlops.core.ports import SignedModel, VerificationFailed, VerificationInternalError, VerificationUnavailable

__all__ = [
    "PRIVATE_API",
    "OmsVerifier",
    "public_good_trust_config",
    "sign_statement_with_key",
    "signed_model_from_payload",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Every private model_signing name this module uses (relative to ``model_signing._signing``).
PRIVATE_API = (
    "sign_sigstore_pb.Signature.read",
    "sign_ec_key.Verifier",
    "sign_ec_key.Verifier.verify",
    "sign_certificate.Verifier",
    "sign_certificate.Verifier.verify",
    "sign_certificate.Verifier._verify_certificates",
    "sign_sigstore_pb.Verifier._verify_signed_content",
    "sign_ec_key.Signer",
    "sign_ec_key.Signer.sign",
    "sign_certificate.Signer",
)
# What the libraries raise when the input does not verify; anything else is an internal error.
_FAILURES = (
    ValueError,  # model_signing's documented failure; pydantic's ValidationError, binascii.Error, JSON errors
    InvalidSignature,
    UnsupportedAlgorithm,
    SigstoreError,
    openssl_crypto.Error,
    openssl_crypto.X509StoreContextError,
)
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model_signing signs with


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
_MAX_KEY_VERIFIERS = 1024


def public_good_trust_config() -> sigstore_models.ClientTrustConfig:
    """The public-good Sigstore trust root embedded in ``sigstore``, loaded offline (no TUF refresh)."""
    global _PUBLIC_GOOD
    with _PUBLIC_GOOD_LOCK:
        if _PUBLIC_GOOD is None:
            try:
                _PUBLIC_GOOD = sigstore_models.ClientTrustConfig.production(offline=True)
            except (OSError, ValueError, SigstoreError) as exc:  # a missing or unreadable embedded root
                raise VerificationUnavailable(f"the embedded Sigstore trust root could not be loaded: {exc}") from exc
        return _PUBLIC_GOOD


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


def _failing(what: str, action: Callable[[], _T]) -> _T:
    """Run a library call; a failure it raises for bad input is a verification failure naming ``what``."""
    try:
        return action()
    except _FAILURES as exc:
        raise VerificationFailed(f"{what} rejected: {_first_line(exc)}") from exc


def _fail_closed(what: str, action: Callable[[], _T]) -> _T:
    """Anything but a verdict or an unavailable verification is a bug or an API change: an internal error."""
    try:
        return action()
    except (VerificationFailed, VerificationUnavailable):
        raise
    except Exception as exc:
        _log.exception("internal error in %s", what)
        raise VerificationInternalError(
            f"internal error in {what} ({type(exc).__name__}): a bug or an incompatible verification library, "
            "not a verdict on the bundle; denied (fail closed), see the log",
            context={"error": repr(exc)},
        ) from exc


class OmsVerifier:
    """The ``SignatureVerifier`` port over model_signing and sigstore; verifiers are built once per authority."""

    def __init__(self) -> None:
        self._keyless: dict[str, SigstoreVerifier] = {}
        self._key_verifiers: dict[str, Any] = {}  # public key PEM -> model_signing's verifier for it
        self._lock = threading.Lock()

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        return _fail_closed("signature verification", lambda: self._verify_model(bundle, authority))

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        return _fail_closed("SBOM signature verification", lambda: self._verify_blob(artifact, bundle, authority))

    def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        return _fail_closed("attestation verification", lambda: self._verify_attestation(bundle, authority))

    # -- model bundles -------------------------------------------------------------------------------------
    def _verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        document = bundle_document(bundle, authority=authority.name, kind=authority.kind)
        if authority.kind == "keyless":
            return self._verify_model_keyless(bundle, authority)
        expected = signed_model_from_payload(dsse_payload(document), signer="")  # checked before the library reads it
        signature = _failing("bundle", lambda: sign_sigstore_pb.Signature.read(_Text(bundle)))  # type: ignore[arg-type]
        verifier, signer = self._bundle_verifier(authority, document)
        signed = _failing("signature", lambda: verifier.verify(signature))
        _same_manifest(signed, expected)
        return replace(expected, signer=signer)

    def _verify_model_keyless(self, bundle: str, authority: Authority) -> SignedModel:
        parsed = _failing("Sigstore bundle", lambda: sigstore_models.Bundle.from_json(bundle))
        verifier = self._keyless_verifier(authority)
        policy = _identity_policy(authority)
        payload_type, payload = _failing("signature", lambda: verifier.verify_dsse(bundle=parsed, policy=policy))
        if payload_type != IN_TOTO_PAYLOAD:
            raise VerificationFailed(f"DSSE payload type: got {payload_type!r}, expected {IN_TOTO_PAYLOAD!r}")
        signer = ", ".join(sorted(_sans(parsed.signing_certificate))) + f" ({authority.issuer})"
        return signed_model_from_payload(payload, signer)

    # -- evidence attestations (DSSE, any in-toto statement) ------------------------------------------------
    def _verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        document = bundle_document(bundle, authority=authority.name, kind=authority.kind)
        if authority.kind == "keyless":
            parsed = _failing("Sigstore bundle", lambda: sigstore_models.Bundle.from_json(bundle))
            keyless = self._keyless_verifier(authority)
            policy = _identity_policy(authority)
            payload_type, payload = _failing("signature", lambda: keyless.verify_dsse(bundle=parsed, policy=policy))
            signer = ", ".join(sorted(_sans(parsed.signing_certificate))) + f" ({authority.issuer})"
        else:
            dsse_payload(document)  # the envelope's shape, checked before the library reads it
            signature = _failing("bundle", lambda: sign_sigstore_pb.Signature.read(_Text(bundle)))  # type: ignore[arg-type]
            verifier, signer = self._bundle_verifier(authority, document)
            payload_type, payload = _failing("signature", lambda: verifier._verify_signed_content(signature))
        if payload_type != IN_TOTO_PAYLOAD:
            raise VerificationFailed(f"DSSE payload type: got {payload_type!r}, expected {IN_TOTO_PAYLOAD!r}")
        return VerifiedAttestation(statement=read_statement(bytes(payload)), signer=signer)

    # -- plain bundles over one artifact -------------------------------------------------------------------
    def _verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        document = bundle_document(bundle, authority=authority.name, kind=authority.kind)
        if authority.kind == "keyless":
            parsed = _failing("Sigstore bundle", lambda: sigstore_models.Bundle.from_json(bundle))
            verifier = self._keyless_verifier(authority)
            policy = _identity_policy(authority)
            _failing("signature", lambda: verifier.verify_artifact(artifact, parsed, policy))
            return ", ".join(sorted(_sans(parsed.signing_certificate))) + f" ({authority.issuer})"
        signature, digest = message_signature(document)
        if digest is not None and digest != hashlib.sha256(artifact).digest():
            raise VerificationFailed("the bundle's message digest does not match the artifact's SHA-256")
        key: Any
        if authority.kind == "key":
            key = _ec_key(authority)
            signer = f"key {_key_fingerprint(authority.public_key)}"
        else:
            _certificates(authority)
            pb = _failing("bundle", lambda: sign_sigstore_pb.Signature.read(_Text(bundle)))  # type: ignore[arg-type]
            chain = _failing(
                "certificate chain",
                lambda: sign_certificate.Verifier([_Text(authority.certificates)]),  # type: ignore[list-item]
            )
            key = _failing("certificate chain", lambda: chain._verify_certificates(pb.bundle.verification_material))
            signer = _leaf_subject(leaf_certificate_der(document))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise VerificationFailed("only elliptic-curve keys are supported for SBOM signatures")
        try:
            key.verify(signature, artifact, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError) as exc:
            raise VerificationFailed("the signature over the artifact does not verify for this key") from exc
        return signer

    # -- helpers -------------------------------------------------------------------------------------------
    def _bundle_verifier(self, authority: Authority, document: Any) -> tuple[Any, str]:
        """model_signing's verifier for a key or certificate authority, and the signer it names."""
        if authority.kind == "key":
            return self._key_verifier(authority), f"key {_key_fingerprint(authority.public_key)}"
        _certificates(authority)
        verifier = _failing(
            "certificate chain",
            lambda: sign_certificate.Verifier([_Text(authority.certificates)]),  # type: ignore[list-item]
        )
        return verifier, _leaf_subject(leaf_certificate_der(document))

    def _key_verifier(self, authority: Authority) -> Any:
        """model_signing's verifier for a public key, built once per key (loading the PEM twice cost a tenth of a
        verification); the key's checks run when it is built, so a bad key fails as before."""
        with self._lock:
            cached = self._key_verifiers.get(authority.public_key)
        if cached is not None:
            return cached
        _ec_key(authority)
        verifier = _failing("public key", lambda: sign_ec_key.Verifier(_Text(authority.public_key)))  # type: ignore[arg-type]
        with self._lock:
            if len(self._key_verifiers) >= _MAX_KEY_VERIFIERS:  # keys of policies long gone
                self._key_verifiers.clear()
            self._key_verifiers[authority.public_key] = verifier
        return verifier

    def _keyless_verifier(self, authority: Authority) -> SigstoreVerifier:
        version = authority.trust_root_version
        with self._lock:
            cached = self._keyless.get(version)
        if cached is not None:
            return cached
        if authority.trust_config:
            config = _failing(
                "trustConfig", lambda: sigstore_models.ClientTrustConfig.from_json(authority.trust_config)
            )
        else:
            config = public_good_trust_config()
        verifier = _failing("trust root", lambda: SigstoreVerifier(trusted_root=config.trusted_root))
        with self._lock:
            self._keyless[version] = verifier
        return verifier


def _identity_policy(authority: Authority) -> Any:
    if authority.identity_regexp:
        return _RegexpIdentity(authority.identity_regexp, authority.issuer)
    return sigstore_policy.Identity(identity=authority.identity, issuer=authority.issuer)


def _ec_key(authority: Authority) -> ec.EllipticCurvePublicKey:
    """The authority's public key, which model_signing expects on one of its curves."""
    key = _failing(
        f"authority {authority.name}'s public key",
        lambda: serialization.load_pem_public_key(authority.public_key.encode()),
    )
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        found = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
        curves = ", ".join(_CURVES)
        raise VerificationFailed(
            f"authority {authority.name}'s public key: got {found}, expected an elliptic-curve key on {curves}"
        )
    return key


def _certificates(authority: Authority) -> None:
    """The authority's certificates must read as PEM before model_signing builds its trust store from them."""
    _failing(
        f"authority {authority.name}'s certificates",
        lambda: x509.load_pem_x509_certificates(authority.certificates.encode()),
    )


def _same_manifest(signed: Any, expected: SignedModel) -> None:
    """model_signing's manifest and the statement read by ``omsformat`` must agree, or one of them changed."""
    files = tuple((d.identifier, f"{d.digest.algorithm}:{d.digest.digest_hex}") for d in signed.resource_descriptors())
    if (signed.model_name, files) != (expected.model_name, expected.files):
        _log.error("model_signing read %s, devmlops read %s", (signed.model_name, files), expected)
        raise VerificationInternalError(
            "internal error in signature verification: model_signing and devmlops read the signed manifest "
            "differently; denied (fail closed), see the log"
        )


def _key_fingerprint(pem: str) -> str:
    return "sha256:" + hashlib.sha256(pem.strip().encode()).hexdigest()[:16]


def _leaf_subject(der: bytes) -> str:
    try:
        return str(x509.load_der_x509_certificate(der).subject.rfc4514_string())
    except ValueError:
        return "certificate (no readable subject)"


class _StatementPayload:
    """What model_signing's signers read of a ``signing.Payload``: ``statement.pb``, an in-toto Statement."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement


def sign_statement_with_key(
    statement: Any,
    *,
    private_key: Path,
    signing_certificate: Path | None = None,
    certificate_chain: Sequence[Path] = (),
) -> str:
    """A Sigstore bundle (JSON) with a DSSE envelope around ``statement`` (an ``in_toto_attestation`` Statement),
    signed by model_signing's EC key signer, or its certificate signer when a signing certificate is given."""
    signer: Any
    if signing_certificate is not None:
        signer = sign_certificate.Signer(private_key, signing_certificate, list(certificate_chain))
    else:
        signer = sign_ec_key.Signer(private_key, None)
    signature = signer.sign(_StatementPayload(statement))
    return str(signature.bundle.to_json())
