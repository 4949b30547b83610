"""The OMS wire formats, read field by field before any library sees them.

An OMS signature is a Sigstore bundle (JSON) around a DSSE envelope whose payload is an in-toto statement with
model_signing's predicate (v1.0, or the v0.1 "Digests" predicate of model_signing 0.2). Checking every field read
here turns a malformed bundle into a ``VerificationFailed`` that names the field; the libraries called afterwards
then only see the shapes they expect, so an exception from inside them is a bug or an API change (an internal
error), never a verdict on the bundle. Serialization parameters go through model_signing's public
``model_signing.manifest.SerializationType``; the rest of the statement format is the one model_signing documents
for its ``Payload``, read here because model_signing's reader of it is private.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

from model_signing import manifest

from devmlops.core.ports import SignedModel, VerificationFailed

__all__ = [
    "IN_TOTO_PAYLOAD",
    "bundle_document",
    "dsse_payload",
    "leaf_certificate_der",
    "message_signature",
    "signed_model_from_payload",
]

IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
PREDICATE_V1 = "https://model_signing/signature/v1.0"
PREDICATE_V01 = "https://model_signing/Digests/v0.1"  # model_signing 0.2: every file is a subject
COMPAT_MODEL_NAME = "compat-undefined-not-present"  # the name model_signing gives a v0.1 model

Kind = Literal["key", "certificateChain", "keyless"]
_MATERIAL = {
    "publicKey": "a public key",
    "x509CertificateChain": "a certificate chain",
    "certificate": "a Sigstore certificate",
}
_EXPECTED = {"key": "a public key", "certificateChain": "a certificate chain", "keyless": "a Sigstore certificate"}


def _kind_of(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise VerificationFailed(f"{where}: got {_kind_of(value)}, expected an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise VerificationFailed(f"{where}: got {_kind_of(value)}, expected a list")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise VerificationFailed(f"{where}: got {_kind_of(value)}, expected a non-empty string")
    return value


def _base64(value: object, where: str) -> bytes:
    try:
        return base64.b64decode(_text(value, where), validate=True)
    except binascii.Error as exc:
        raise VerificationFailed(f"{where}: not base64 ({exc})") from exc


def _hex(value: object, where: str) -> bytes:
    try:
        return bytes.fromhex(_text(value, where))
    except ValueError as exc:
        raise VerificationFailed(f"{where}: not a hexadecimal digest") from exc


# -- the bundle ---------------------------------------------------------------------------------------------------


def bundle_document(bundle: str, *, authority: str, kind: Kind) -> Mapping[str, Any]:
    """The bundle as JSON, carrying the verification material this kind of authority checks, in the shape the
    libraries read (a bundle made for another kind of authority is named as such)."""
    try:
        document = json.loads(bundle)
    except ValueError as exc:
        raise VerificationFailed(f"signature bundle is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # bad input, not a bug in devmlops: a failure like any malformed bundle
        raise VerificationFailed("signature bundle is not valid JSON: nested too deeply") from exc
    material = document.get("verificationMaterial") if isinstance(document, dict) else None
    if not isinstance(material, dict):
        raise VerificationFailed("signature bundle has no verificationMaterial: expected a Sigstore bundle")
    found = next((_MATERIAL[key] for key in _MATERIAL if key in material), "unknown material")
    older_keyless = kind == "keyless" and "x509CertificateChain" in material  # bundles before v0.3
    if found != _EXPECTED[kind] and not older_keyless:
        raise VerificationFailed(f"bundle is signed with {found}, but authority {authority} expects {_EXPECTED[kind]}")
    if kind == "key":
        _object(material["publicKey"], "verificationMaterial.publicKey")
    elif kind == "certificateChain":
        leaf_certificate_der(document)
    return _object(document, "signature bundle")


def leaf_certificate_der(document: Mapping[str, Any]) -> bytes:
    """The signing certificate (DER) of a certificate-chain bundle; every certificate of the chain is checked."""
    where = "verificationMaterial.x509CertificateChain"
    chain = _object(
        _object(document["verificationMaterial"], "verificationMaterial").get("x509CertificateChain"), where
    )
    certificates = _list(chain.get("certificates"), f"{where}.certificates")
    if not certificates:
        raise VerificationFailed(f"{where}.certificates: empty, expected the signing certificate first")
    ders = [
        _base64(_object(c, f"{where}.certificates[{i}]").get("rawBytes"), f"{where}.certificates[{i}].rawBytes")
        for i, c in enumerate(certificates)
    ]
    return ders[0]


def dsse_payload(document: Mapping[str, Any]) -> bytes:
    """The DSSE envelope's payload, after checking the envelope carries an in-toto payload and a signature."""
    envelope = _object(document.get("dsseEnvelope"), "dsseEnvelope")
    payload_type = envelope.get("payloadType")
    if payload_type != IN_TOTO_PAYLOAD:
        raise VerificationFailed(f"DSSE payload type: got {payload_type!r}, expected {IN_TOTO_PAYLOAD!r}")
    signatures = _list(envelope.get("signatures"), "dsseEnvelope.signatures")
    if not signatures:
        raise VerificationFailed("dsseEnvelope.signatures: empty, expected one signature")
    for index, signature in enumerate(signatures):
        _base64(
            _object(signature, f"dsseEnvelope.signatures[{index}]").get("sig"), f"dsseEnvelope.signatures[{index}].sig"
        )
    return _base64(envelope.get("payload"), "dsseEnvelope.payload")


def message_signature(document: Mapping[str, Any]) -> tuple[bytes, bytes | None]:
    """A bundle over one artifact: its signature and, when the bundle states one, the artifact's SHA-256."""
    message = document.get("messageSignature")
    if not isinstance(message, dict) or "signature" not in message:
        raise VerificationFailed("bundle has no messageSignature: expected a Sigstore bundle over one artifact")
    signature = _base64(message["signature"], "messageSignature.signature")
    stated = message.get("messageDigest")
    if stated is None:
        return signature, None
    digest = _object(stated, "messageSignature.messageDigest").get("digest")
    return signature, _base64(digest, "messageSignature.messageDigest.digest") if digest else None


# -- the signed statement -----------------------------------------------------------------------------------------


def signed_model_from_payload(payload: bytes, signer: str) -> SignedModel:
    """The signed manifest of an in-toto statement, checked: the root digest covers the file digests."""
    try:
        statement = json.loads(payload)
    except ValueError as exc:  # UnicodeDecodeError too
        raise VerificationFailed(f"the DSSE payload is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise VerificationFailed("the DSSE payload is not JSON: nested too deeply") from exc
    if not isinstance(statement, dict) or statement.get("_type") != IN_TOTO_STATEMENT:
        found = statement.get("_type") if isinstance(statement, dict) else _kind_of(statement)
        raise VerificationFailed(f"payload type: got {found!r}, expected an in-toto statement ({IN_TOTO_STATEMENT})")
    predicate_type = statement.get("predicateType")
    subjects = _list(statement.get("subject"), "subject")
    if predicate_type == PREDICATE_V1:
        model_name, root, files, serialization = _v1(subjects, statement.get("predicate"))
    elif predicate_type == PREDICATE_V01:
        model_name, root, files, serialization = _v01(subjects)
    else:
        raise VerificationFailed(f"predicateType: got {predicate_type!r}, expected {PREDICATE_V1!r}")
    return SignedModel(
        model_name=model_name,
        digest=f"sha256:{root}",
        files=files,
        signer=signer,
        predicate_type=str(predicate_type),
        serialization=serialization,
    )


_Files = tuple[tuple[str, str], ...]


def _v1(subjects: list[Any], raw_predicate: object) -> tuple[str, str, _Files, dict[str, Any]]:
    if len(subjects) != 1:
        raise VerificationFailed(f"subject: got {len(subjects)} entries, expected one (the model)")
    subject = _object(subjects[0], "subject[0]")
    name = _text(subject.get("name"), "subject[0].name")
    root = _text(_object(subject.get("digest"), "subject[0].digest").get("sha256"), "subject[0].digest.sha256")
    predicate = _object(raw_predicate, "predicate")
    serialization = _serialization(predicate.get("serialization"))
    hasher = hashlib.sha256()
    items: dict[tuple[Any, ...], tuple[str, str]] = {}
    for index, raw in enumerate(_list(predicate.get("resources"), "predicate.resources")):
        where = f"predicate.resources[{index}]"
        resource = _object(raw, where)
        algorithm = _text(resource.get("algorithm"), f"{where}.algorithm")
        digest = _hex(resource.get("digest"), f"{where}.digest")
        hasher.update(digest)
        key, identifier = _item(_text(resource.get("name"), f"{where}.name"), serialization["method"], where)
        if key in items:
            raise VerificationFailed(f"{where}.name: {identifier!r} is listed twice")
        items[key] = (identifier, f"{algorithm}:{digest.hex()}")
    if hasher.hexdigest() != root:
        raise VerificationFailed(
            f"the signed manifest is inconsistent: subject digest {root[:16]}..., "
            f"but its resources hash to {hasher.hexdigest()[:16]}..."
        )
    return name, root, tuple(items[key] for key in sorted(items)), serialization


def _v01(subjects: list[Any]) -> tuple[str, str, _Files, dict[str, Any]]:
    items: dict[tuple[Any, ...], tuple[str, str]] = {}
    for index, raw in enumerate(subjects):
        subject = _object(raw, f"subject[{index}]")
        path = PurePosixPath(_text(subject.get("name"), f"subject[{index}].name"))
        digest = _hex(
            _object(subject.get("digest"), f"subject[{index}].digest").get("sha256"), f"subject[{index}].digest.sha256"
        )
        if (path,) in items:
            raise VerificationFailed(f"subject[{index}].name: {str(path)!r} is listed twice")
        items[(path,)] = (str(path), f"sha256:{digest.hex()}")
    if not items:
        raise VerificationFailed("subject: empty, expected the model's files")
    files = tuple(items[key] for key in sorted(items))
    if len(files) == 1:  # as devmlops always read it: a one-file model is named by its file's digest
        root = files[0][1].removeprefix("sha256:")
    else:  # no root in the statement: derive it the 1.0 way
        root = hashlib.sha256(b"".join(bytes.fromhex(d.removeprefix("sha256:")) for _n, d in files)).hexdigest()
    serialization = manifest.SerializationType.from_args(
        {"method": "files", "hash_type": "sha256", "allow_symlinks": False}
    ).serialization_parameters
    return COMPAT_MODEL_NAME, root, files, dict(serialization)


def _serialization(raw: object) -> dict[str, Any]:
    """How the signer hashed the files: checked here, then normalized by model_signing's public manifest API."""
    where = "predicate.serialization"
    args = _object(raw, where)
    method = args.get("method")
    if method not in ("files", "shards"):
        raise VerificationFailed(f"{where}.method: got {method!r}, expected 'files' or 'shards'")
    _text(args.get("hash_type"), f"{where}.hash_type")
    if not isinstance(args.get("allow_symlinks"), bool):
        raise VerificationFailed(
            f"{where}.allow_symlinks: got {_kind_of(args.get('allow_symlinks'))}, expected a boolean"
        )
    shard_size = args.get("shard_size")
    whole = type(shard_size) is int or (isinstance(shard_size, float) and shard_size.is_integer())  # JSON via protobuf
    if method == "shards" and not (whole and isinstance(shard_size, int | float) and shard_size > 0):
        raise VerificationFailed(f"{where}.shard_size: got {shard_size!r}, expected a positive integer")
    ignore = _list(args.get("ignore_paths", []), f"{where}.ignore_paths")
    if not all(isinstance(path, str) for path in ignore):
        raise VerificationFailed(f"{where}.ignore_paths: expected a list of strings")
    return dict(manifest.SerializationType.from_args(dict(args)).serialization_parameters)


def _item(name: str, method: str, where: str) -> tuple[tuple[Any, ...], str]:
    """A resource's sort key and identifier, normalized as model_signing's manifest normalizes them."""
    if method == "files":
        path = PurePosixPath(name)
        return (path,), str(path)
    parts = name.split(":")
    try:
        path, start, end = PurePosixPath(parts[0]), int(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError(name)
    except (ValueError, IndexError) as exc:
        raise VerificationFailed(f"{where}.name: got {name!r}, expected a shard as 'path:start:end'") from exc
    return (path, start, end), f"{path}:{start}:{end}"
