"""Only a bundle that does not verify is "not verified" (and cached); a bug or an API change inside the adapter or
the libraries is an internal error: denied, never cached. Malformed bundles, field by field, are never the latter."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.omsformat import signed_model_from_payload
from devmlops.adapters.verifycache import CachingVerifier
from devmlops.core.decision import decide
from devmlops.core.policy import Authority
from devmlops.core.ports import SignedModel, VerificationFailed, VerificationInternalError
from tests.support.models import make_cert_chain, make_key, make_model, sign_with_certificate, sign_with_key
from tests.unit.core.test_gates import evidence, policies, policy, request, spec

# Library functions the adapter reaches on every key-signed bundle, and a programming error each might raise.
BREAKAGES = [
    ("model_signing._signing.sign_sigstore_pb.Signature.read", TypeError("read() got an unexpected keyword")),
    ("model_signing._signing.sign_ec_key.Verifier.verify", TypeError("verify() missing 1 required argument")),
    ("model_signing._signing.sign_ec_key.Verifier.__init__", AttributeError("'Path' has no attribute 'open'")),
    ("model_signing.manifest.SerializationType.from_args", KeyError("hash_type")),
    ("cryptography.hazmat.primitives.serialization.load_pem_public_key", NameError("name 'backend' is not defined")),
]


@pytest.fixture
def signed(tmp_path: Path) -> tuple[str, Authority]:
    key = make_key(tmp_path)
    bundle = sign_with_key(make_model(tmp_path / "fraud"), key, tmp_path / "model.sig")
    return bundle, Authority(name="release", kind="key", public_key=key.public_pem)


class Broken:
    """Stands in for a library function: counts its calls and raises a programming error."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def __call__(self, *_args: object, **_kwargs: object) -> Any:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    ("target", "error"), BREAKAGES, ids=[t.rsplit(".", 2)[-2] + "." + t.rsplit(".", 1)[-1] for t, _e in BREAKAGES]
)
def test_a_programming_error_in_a_library_is_an_internal_error_and_is_never_cached(
    monkeypatch: pytest.MonkeyPatch, signed: tuple[str, Authority], target: str, error: Exception
) -> None:
    bundle, authority = signed
    broken = Broken(error)
    monkeypatch.setattr(target, broken)
    events: list[str] = []
    cache = CachingVerifier(OmsVerifier(), on_event=events.append)
    for _ in range(2):
        with pytest.raises(
            VerificationInternalError, match=rf"internal error in signature verification \({type(error).__name__}\)"
        ):
            cache.verify_model(bundle, authority)
    assert broken.calls == 2  # asked again: the error was not cached
    assert events == ["miss", "miss"]
    monkeypatch.undo()
    assert cache.verify_model(bundle, authority).model_name == "fraud"  # once fixed, the same bundle verifies


def test_a_programming_error_in_sigstore_on_a_keyless_bundle_is_an_internal_error_too(
    monkeypatch: pytest.MonkeyPatch, shared_fixtures: Path
) -> None:
    bundle = (shared_fixtures / "sigstore-model-transparency/v1.1.0-sigstore/model.sig").read_text()
    authority = Authority(
        name="ibm", kind="keyless", identity="stefanb@us.ibm.com", issuer="https://sigstore.verify.ibm.com/oauth2"
    )
    broken = Broken(AttributeError("'Bundle' object has no attribute '_dsse_envelope'"))
    monkeypatch.setattr("sigstore.verify.Verifier.verify_dsse", broken)
    cache = CachingVerifier(OmsVerifier())
    for _ in range(2):
        with pytest.raises(VerificationInternalError, match=r"internal error in signature verification \(Attr"):
            cache.verify_model(bundle, authority)
    assert broken.calls == 2


def test_an_internal_error_is_a_denial_that_says_internal_error(
    monkeypatch: pytest.MonkeyPatch, signed: tuple[str, Authority]
) -> None:
    bundle, authority = signed
    monkeypatch.setattr("model_signing._signing.sign_ec_key.Verifier.verify", Broken(TypeError("changed")))
    rules = policies(policy(authorities=[{"name": "release", "key": {"publicKey": authority.public_key}}]))
    decision = decide(request(spec()), rules, evidence(bundle), CachingVerifier(OmsVerifier()))
    assert not decision.allowed
    assert decision.results[0].outcome == "error"
    assert "internal error in signature verification (TypeError)" in decision.message


def test_a_bug_in_the_adapter_itself_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, signed: tuple[str, Authority]
) -> None:
    bundle, authority = signed
    monkeypatch.setattr("devmlops.adapters.oms.signed_model_from_payload", Broken(AttributeError("'dict' ...")))
    with pytest.raises(VerificationInternalError, match="internal error"):
        OmsVerifier().verify_model(bundle, authority)


def test_model_signing_reading_the_manifest_differently_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, signed: tuple[str, Authority]
) -> None:
    from model_signing._signing import sign_ec_key

    bundle, authority = signed
    original = sign_ec_key.Verifier.verify

    class Renamed:
        def __init__(self, manifest: Any) -> None:
            self.model_name = "another-model"
            self.resource_descriptors = manifest.resource_descriptors

    monkeypatch.setattr(sign_ec_key.Verifier, "verify", lambda self, sig: Renamed(original(self, sig)))
    with pytest.raises(VerificationInternalError, match="read the signed manifest differently"):
        OmsVerifier().verify_model(bundle, authority)


def test_a_genuine_failure_stays_a_cached_failure(tmp_path: Path, signed: tuple[str, Authority]) -> None:
    bundle, _authority = signed
    other = Authority(name="other", kind="key", public_key=make_key(tmp_path, "other").public_pem)
    events: list[str] = []
    cache = CachingVerifier(OmsVerifier(), on_event=events.append)
    for _ in range(2):
        with pytest.raises(VerificationFailed) as raised:
            cache.verify_model(bundle, other)
        assert not isinstance(raised.value, VerificationInternalError)
    assert events == ["miss", "negative_hit"]


ED25519_PEM = (
    ed25519.Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.parametrize(
    ("pem", "complaint"),
    [
        ("not a key", "public key rejected"),
        (ED25519_PEM, "got Ed25519PublicKey, expected an elliptic-curve key"),
    ],
)
def test_an_authority_key_model_signing_cannot_use_is_a_failure_that_says_why(
    signed: tuple[str, Authority], pem: str, complaint: str
) -> None:
    bundle, _authority = signed
    with pytest.raises(VerificationFailed, match=complaint) as raised:
        OmsVerifier().verify_model(bundle, Authority(name="odd", kind="key", public_key=pem))
    assert not isinstance(raised.value, VerificationInternalError)


# -- malformed bundles, field by field -----------------------------------------------------------------------------

ODD_VALUES: list[object] = [None, True, 0, -1, 1.5, "", "x", "!!", [], [{}], {}, {"sig": 1}]
MISSING = object()


def paths(value: object, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(document: Any, path: tuple[str | int, ...], value: object) -> Any:
    if not path:
        return value
    copied = copy.deepcopy(document)
    parent = copied
    for step in path[:-1]:
        parent = parent[step]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copied


def variants(bundle: str) -> Iterator[str]:
    """Every field of the bundle, and of the statement inside it, replaced by odd values or removed."""
    document = json.loads(bundle)
    for path in paths(document):
        for value in [*ODD_VALUES, *([MISSING] if path else [])]:
            yield json.dumps(replaced(document, path, value))
    statement = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    for path in paths(statement):
        for value in [*ODD_VALUES, *([MISSING] if path else [])]:
            payload = base64.b64encode(json.dumps(replaced(statement, path, value)).encode()).decode()
            yield json.dumps(replaced(document, ("dsseEnvelope", "payload"), payload))


@pytest.mark.parametrize("kind", ["key", "certificateChain"])
def test_any_field_replaced_or_removed_is_a_verification_failure_never_an_internal_error(
    tmp_path: Path, kind: str
) -> None:
    model = make_model(tmp_path / "fraud")
    if kind == "key":
        key = make_key(tmp_path)
        bundle = sign_with_key(model, key, tmp_path / "model.sig")
        authority = Authority(name="release", kind="key", public_key=key.public_pem)
    else:
        chain = make_cert_chain(tmp_path)
        bundle = sign_with_certificate(model, chain, tmp_path / "model.sig")
        authority = Authority(name="corp", kind="certificateChain", certificates=chain.ca_pem.read_text())
    verifier = OmsVerifier()
    original = verifier.verify_model(bundle, authority)
    outcomes = {"failed": 0, "verified": 0}
    internal: list[str] = []
    for text in variants(bundle):
        try:
            result = verifier.verify_model(text, authority)
        except VerificationInternalError as exc:
            internal.append(f"{exc.user_message} {exc.context} for {text[:300]}")
        except VerificationFailed:
            outcomes["failed"] += 1
        else:  # a field that does not matter (a key hint, the media type's spelling): the same manifest
            assert result == original
            outcomes["verified"] += 1
    assert internal == []
    assert outcomes["failed"] > 300


# -- the statement, read without model_signing's private reader -----------------------------------------------------


FILE_HEX = "ab" * 32
ROOT_HEX = hashlib.sha256(bytes.fromhex(FILE_HEX)).hexdigest()


def statement(**overrides: Any) -> bytes:
    base: dict[str, Any] = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "fraud", "digest": {"sha256": ROOT_HEX}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [{"name": "./w.bin", "algorithm": "sha256", "digest": FILE_HEX.upper()}],
        },
    }
    base.update(overrides)
    return json.dumps(base).encode()


def test_a_v1_statement_is_read_with_normalized_names_and_digests() -> None:
    signed = signed_model_from_payload(statement(), signer="s")
    assert signed == SignedModel(
        model_name="fraud",
        digest=f"sha256:{ROOT_HEX}",
        files=(("w.bin", f"sha256:{FILE_HEX}"),),
        signer="s",
        predicate_type="https://model_signing/signature/v1.0",
        serialization={"method": "files", "hash_type": "sha256", "allow_symlinks": False},
    )


def test_a_v01_statement_of_model_signing_0_2_is_read_with_a_boolean_symlink_setting() -> None:
    payload = statement(
        predicateType="https://model_signing/Digests/v0.1",
        subject=[{"name": "b", "digest": {"sha256": "22" * 32}}, {"name": "a", "digest": {"sha256": "11" * 32}}],
    )
    signed = signed_model_from_payload(payload, signer="s")
    assert signed.files == (("a", "sha256:" + "11" * 32), ("b", "sha256:" + "22" * 32))
    assert signed.serialization["allow_symlinks"] is False  # model_signing itself says "false", a true string


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"predicateType": "https://example.com/other"}, "predicateType: got 'https://example.com/other'"),
        ({"subject": []}, "subject: got 0 entries, expected one"),
        ({"subject": [{"name": "fraud", "digest": {"sha256": "00" * 32}}]}, "the signed manifest is inconsistent"),
        ({"predicate": {"serialization": {"method": "tensors"}, "resources": []}}, "method: got 'tensors'"),
        (
            {"predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": "no"}}},
            "allow_symlinks: got a string, expected a boolean",
        ),
        (
            {
                "predicate": {
                    "serialization": {
                        "method": "shards",
                        "hash_type": "sha256",
                        "allow_symlinks": False,
                        "shard_size": 1.5,
                    },
                    "resources": [],
                }
            },
            "shard_size: got 1.5",
        ),
        (
            {
                "predicate": {
                    "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
                    "resources": [{"name": "a", "algorithm": "sha256", "digest": "zz"}],
                }
            },
            r"predicate.resources\[0\].digest: not a hexadecimal digest",
        ),
    ],
)
def test_a_malformed_statement_is_a_failure_naming_the_field(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(VerificationFailed, match=complaint):
        signed_model_from_payload(statement(**overrides), signer="s")


def test_a_bundle_or_payload_nested_too_deeply_is_a_malformed_bundle_not_an_internal_error(
    signed: tuple[str, Authority],
) -> None:
    """A namespace editor's crafted bundle: a failure (cached, no traceback in the log), like any malformed one."""
    bundle, authority = signed
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(VerificationFailed, match="signature bundle is not valid JSON: nested too deeply"):
        OmsVerifier().verify_model(bundle[:-1] + ', "extra": ' + deep + "}", authority)
    document = json.loads(bundle)
    document["dsseEnvelope"]["payload"] = base64.b64encode(deep.encode()).decode()
    with pytest.raises(VerificationFailed, match="the DSSE payload is not JSON: nested too deeply"):
        OmsVerifier().verify_model(json.dumps(document), authority)
