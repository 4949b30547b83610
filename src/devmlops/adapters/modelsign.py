"""``devmlops sign``: model_signing's public signing API, returning what admission will see."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from model_signing import hashing, signing

from devmlops.adapters.omsformat import signed_model_from_payload
from devmlops.core.ports import SignedModel
from devmlops.errors import InvalidInputError

__all__ = ["sign_model", "split_chain"]


def sign_model(
    model_path: Path,
    output: Path,
    *,
    private_key: Path | None,
    certificate_chain: Sequence[Path] = (),
    ignore_paths: Sequence[str] = (),
) -> SignedModel:
    config = signing.Config()
    try:
        if private_key and certificate_chain:
            with tempfile.TemporaryDirectory() as tmp:
                leaf, rest = split_chain(certificate_chain, Path(tmp))
                config.use_certificate_signer(private_key=private_key, signing_certificate=leaf, certificate_chain=rest)
                _sign(config, model_path, output, ignore_paths)
        elif private_key:
            config.use_elliptic_key_signer(private_key=private_key)
            _sign(config, model_path, output, ignore_paths)
        else:
            config.use_sigstore_signer()
            _sign(config, model_path, output, ignore_paths)
    except (ValueError, TypeError, OSError) as exc:
        raise InvalidInputError(f"signing failed: {exc}") from exc
    return _describe(output)


def _sign(config: signing.Config, model_path: Path, output: Path, ignore_paths: Sequence[str]) -> None:
    config.set_hashing_config(hashing.Config().set_ignored_paths(paths=list(ignore_paths), ignore_git_paths=True))
    config.sign(model_path, output)


def split_chain(chain: Sequence[Path], tmp: Path) -> tuple[Path, list[Path]]:
    """The first certificate of the first file signs; every other certificate goes in the chain."""
    certificates = [cert for path in chain for cert in x509.load_pem_x509_certificates(path.read_bytes())]
    if not certificates:
        raise InvalidInputError("--certificate-chain: no PEM certificate found")
    leaf, rest = tmp / "leaf.pem", tmp / "chain.pem"
    leaf.write_bytes(certificates[0].public_bytes(serialization.Encoding.PEM))
    rest.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates[1:]))
    return leaf, [rest] if len(certificates) > 1 else []


def _describe(output: Path) -> SignedModel:
    import base64
    import json

    bundle = json.loads(output.read_text())
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    return signed_model_from_payload(payload, signer="(as signed)")
