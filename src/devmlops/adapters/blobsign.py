"""Sign one file (an SBOM) with an EC private key into a Sigstore bundle (v0.3, ``messageSignature``).

Keyless signing of a file is sigstore's own job (``sigstore sign``); this covers the key-based case that
``devmlops verify-bundle --public-key`` and the sbom gate verify.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devmlops.errors import InvalidInputError

__all__ = ["sign_blob_with_key"]

_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def sign_blob_with_key(artifact: bytes, private_key_pem: bytes, password: bytes | None = None) -> str:
    try:
        key = serialization.load_pem_private_key(private_key_pem, password)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"private key: not a readable PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInputError(f"private key: got {type(key).__name__}, expected an elliptic-curve key")
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = key.sign(artifact, ec.ECDSA(hashes.SHA256()))
    bundle = {
        "mediaType": _MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hashlib.sha256(public_pem).hexdigest()}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": base64.b64encode(hashlib.sha256(artifact).digest()).decode(),
            },
            "signature": base64.b64encode(signature).decode(),
        },
    }
    return json.dumps(bundle, indent=2)
