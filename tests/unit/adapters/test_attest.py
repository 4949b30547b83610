"""Evidence attestations: in-toto Statement v1 in a DSSE envelope inside a Sigstore bundle, signed with the model
authority kinds (EC key, certificate chain; keyless read from model_signing's own keyless fixture), verified with
the statement and predicate checked field by field."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.predicates import predicate_schema, read_statement
from devmlops.core.attestation import DEVMLOPS_PREDICATES, PREDICATE_FAIRNESS
from devmlops.core.policy import Authority
from devmlops.core.ports import VerificationFailed
from devmlops.errors import InvalidInputError
from tests.support.evidence import attestation, predicate
from tests.support.models import make_cert_chain, make_key

DIGEST = "sha256:" + "ab" * 32


def key_authority(pem: str) -> Authority:
    return Authority(name="evaluators", kind="key", public_key=pem)


@pytest.mark.parametrize("kind", sorted(DEVMLOPS_PREDICATES))
def test_every_predicate_kind_signs_and_verifies_with_an_ec_key(tmp_path: Path, kind: str) -> None:
    key = make_key(tmp_path)
    bundle = attestation(kind, predicate(kind), DIGEST, key=key, name="fraud")
    verified = OmsVerifier().verify_attestation(bundle, key_authority(key.public_pem))
    assert verified.statement.predicate_type == DEVMLOPS_PREDICATES[kind]
    assert verified.statement.subjects == (("fraud", DIGEST),)
    assert verified.statement.timestamp
    assert verified.signer.startswith("key sha256:")
    envelope = json.loads(bundle)["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert json.loads(base64.b64decode(envelope["payload"]))["_type"] == "https://in-toto.io/Statement/v1"


def test_a_certificate_chain_attestation_verifies_against_the_ca_and_names_the_leaf(tmp_path: Path) -> None:
    chain = make_cert_chain(tmp_path)
    bundle = attestation("scan", predicate("scan"), DIGEST, chain=chain)
    authority = Authority(name="ca", kind="certificateChain", certificates=chain.ca_pem.read_text())
    assert OmsVerifier().verify_attestation(bundle, authority).signer == "CN=ml-release-signer"
    (tmp_path / "other").mkdir()
    other = make_cert_chain(tmp_path / "other")
    with pytest.raises(VerificationFailed):
        OmsVerifier().verify_attestation(
            bundle, Authority(name="other", kind="certificateChain", certificates=other.ca_pem.read_text())
        )


def test_another_key_is_rejected(tmp_path: Path) -> None:
    bundle = attestation("fairness", predicate("fairness"), DIGEST, key=make_key(tmp_path, "mallory"))
    with pytest.raises(VerificationFailed, match="signature rejected"):
        OmsVerifier().verify_attestation(bundle, key_authority(make_key(tmp_path, "release").public_pem))


def test_a_changed_payload_no_longer_verifies(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    document = json.loads(attestation("fairness", predicate("fairness"), DIGEST, key=key))
    statement = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    statement["predicate"]["sensitiveFeatures"][0]["demographicParityDifference"] = 0.0
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(VerificationFailed, match="signature rejected"):
        OmsVerifier().verify_attestation(json.dumps(document), key_authority(key.public_pem))


def test_a_model_signature_verifies_as_a_dsse_statement_but_carries_model_signings_predicate(
    shared_fixtures: Path,
) -> None:
    """Keyless: sigstore's public verify_dsse; the model's own signature is a statement of another predicate type
    (the evidence gate refuses it as evidence: tests/unit/core/test_evidence_gate.py)."""
    bundle = (shared_fixtures / "sigstore-model-transparency/v1.1.0-sigstore/model.sig").read_text()
    config = (shared_fixtures / "sigstore-model-transparency/custom_trust_config.json").read_text()
    authority = Authority(
        name="ibm",
        kind="keyless",
        identity="stefanb@us.ibm.com",
        issuer="https://sigstore.verify.ibm.com/oauth2",
        trust_config=config,
    )
    verified = OmsVerifier().verify_attestation(bundle, authority)
    assert verified.statement.predicate_type == "https://model_signing/signature/v1.0"
    assert verified.signer.startswith("stefanb@us.ibm.com")


def test_building_refuses_a_predicate_that_does_not_match_its_schema() -> None:
    body = predicate("fairness")
    body["sensitiveFeatures"][0]["demographicParityDifference"] = "low"
    with pytest.raises(InvalidInputError, match=r"predicate.sensitiveFeatures\[0\].demographicParityDifference"):
        attestation("fairness", body, DIGEST, key=None)


@pytest.mark.parametrize(
    ("digest", "complaint"),
    [("sha256:abc", "--model-digest"), ("sha512:" + "ab" * 64, "--model-digest"), ("", "--model-digest")],
)
def test_building_refuses_a_digest_that_is_not_a_sha256(digest: str, complaint: str) -> None:
    with pytest.raises(InvalidInputError, match=complaint):
        attestation("scan", predicate("scan"), digest, key=None)


def test_an_unknown_devmlops_predicate_type_is_refused_a_foreign_one_passes_as_signed(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a devmlops predicate"):
        attestation("https://devmlops.io/attestation/fairness/v2", predicate("fairness"), DIGEST, key=None)
    key = make_key(tmp_path)
    bundle = attestation("https://slsa.dev/provenance/v1", {"buildDefinition": {"x": 1}}, DIGEST, key=key)
    verified = OmsVerifier().verify_attestation(bundle, key_authority(key.public_pem))
    assert verified.statement.predicate == {"buildDefinition": {"x": 1.0}}


@pytest.mark.parametrize(
    ("statement", "complaint"),
    [
        (b"not json", "not JSON"),
        (b"[]", "expected an in-toto Statement object"),
        (b'{"_type": "https://in-toto.io/Statement/v0.1"}', "statement._type"),
        (b'{"_type": "https://in-toto.io/Statement/v1", "predicateType": 3}', "statement.predicateType"),
        (b'{"_type": "https://in-toto.io/Statement/v1", "predicateType": "x", "subject": []}', "statement.subject"),
        (
            b'{"_type": "https://in-toto.io/Statement/v1", "predicateType": "x", '
            b'"subject": [{"digest": {"sha256": "AB"}}]}',
            r"statement.subject\[0\].digest.sha256",
        ),
        (
            json.dumps(
                {
                    "_type": "https://in-toto.io/Statement/v1",
                    "predicateType": PREDICATE_FAIRNESS,
                    "subject": [{"digest": {"sha256": "ab" * 32}}],
                    "predicate": predicate("fairness", timestamp="yesterday"),
                }
            ).encode(),
            r"predicate.timestamp: 'yesterday' is not a 'date-time'",
        ),
    ],
)
def test_a_malformed_statement_is_a_failure_naming_the_field(statement: bytes, complaint: str) -> None:
    with pytest.raises(VerificationFailed, match=complaint):
        read_statement(statement)


def test_each_schema_has_a_versioned_id_under_the_project_domain_and_requires_a_timestamp() -> None:
    for uri in DEVMLOPS_PREDICATES.values():
        schema = predicate_schema(uri)
        assert schema["$id"] == uri
        assert uri.startswith("https://devmlops.io/attestation/")
        assert uri.endswith("/v1")
        assert "timestamp" in schema["required"]
