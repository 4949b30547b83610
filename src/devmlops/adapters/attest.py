"""``devmlops attest``: an in-toto Statement v1 about a model, in a DSSE envelope inside a Sigstore bundle.

The subject is the model's digest (``spec.model.digest``, the root digest ``devmlops sign`` prints), so an
attestation binds to the same bytes the model signature binds to. The statement is built and checked with
``in_toto_attestation`` (the in-toto project's own types); the predicate is checked against its JSON Schema before
anything is signed, so a malformed predicate never leaves the signer's machine. Signing uses the same authority kinds
as models: an EC key, a key with its certificate chain (model_signing's signers, as ``devmlops sign`` uses them), or
Sigstore keyless (sigstore-python's public ``sign_dsse``; it needs the network and an OIDC identity).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement as InTotoStatement

from devmlops.adapters.modelsign import split_chain
from devmlops.adapters.oms import sign_statement_with_key
from devmlops.adapters.predicates import read_statement
from devmlops.core.attestation import DEVMLOPS_PREDICATES
from devmlops.core.ports import VerificationFailed
from devmlops.errors import InvalidInputError

__all__ = ["build_statement", "predicate_type_uri", "sign_attestation"]

_PUBLIC_GOOD_OIDC = "https://oauth2.sigstore.dev/auth"
_DIGEST = re.compile(r"^sha256:([a-f0-9]{64})$")


def predicate_type_uri(text: str) -> str:
    """A short name (``fairness``) or a full predicate type URI, as a URI."""
    return DEVMLOPS_PREDICATES.get(text, text)


def build_statement(predicate_type: str, predicate: Mapping[str, Any], model_digest: str, model_name: str) -> Any:
    """The checked in-toto Statement (an ``in_toto_attestation`` object); ``InvalidInputError`` naming what is
    wrong: the digest, the statement (in-toto's own validation) or the predicate (its schema)."""
    match = _DIGEST.match(model_digest)
    if match is None:
        raise InvalidInputError(f"--model-digest: got {model_digest!r}, expected sha256:<64 hex digits>")
    if not isinstance(predicate, Mapping) or not predicate:
        raise InvalidInputError("--predicate: expected a non-empty JSON object")
    subject = ResourceDescriptor(name=model_name, digest={"sha256": match.group(1)}).pb
    statement = InTotoStatement([subject], predicate_type, dict(predicate))
    try:
        statement.validate()
    except ValueError as exc:
        raise InvalidInputError(f"in-toto statement: {exc}") from exc
    from google.protobuf import json_format

    payload = json_format.MessageToJson(statement.pb).encode()
    try:
        read_statement(payload)  # what a verifier will read: the in-toto shape and the predicate's schema
    except VerificationFailed as exc:
        raise InvalidInputError(f"--predicate: {exc.user_message}") from exc
    return statement


def sign_attestation(
    statement: Any,
    *,
    private_key: Path | None,
    certificate_chain: Sequence[Path] = (),
    use_sigstore: bool = False,
) -> str:
    """The Sigstore bundle (JSON) around ``statement``."""
    try:
        if use_sigstore:
            return _sign_keyless(statement)
        if private_key is None:
            raise InvalidInputError("give --private-key (optionally with --certificate-chain) or --sigstore")
        if certificate_chain:
            with tempfile.TemporaryDirectory() as tmp:
                leaf, rest = split_chain(certificate_chain, Path(tmp))
                return sign_statement_with_key(
                    statement, private_key=private_key, signing_certificate=leaf, certificate_chain=rest
                )
        return sign_statement_with_key(statement, private_key=private_key)
    except (ValueError, TypeError, OSError) as exc:
        raise InvalidInputError(f"signing failed: {exc}") from exc


def _sign_keyless(statement: Any) -> str:  # pragma: no cover - needs the network and an OIDC identity
    from google.protobuf import json_format
    from sigstore import dsse, oidc
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    payload = json_format.MessageToJson(statement.pb).encode()
    context = SigningContext.from_trust_config(ClientTrustConfig.production())
    ambient = oidc.detect_credential()  # CI's workload identity (GitHub Actions, GitLab, ...) when there is one
    token = oidc.IdentityToken(ambient) if ambient else oidc.Issuer(_PUBLIC_GOOD_OIDC).identity_token()
    with context.signer(token) as signer:
        bundle = signer.sign_dsse(dsse.Statement(payload))
    return json.dumps(json.loads(bundle.to_json()), indent=2)
