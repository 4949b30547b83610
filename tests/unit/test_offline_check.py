"""`devmlops check`'s engine over real parts: real signatures, real SBOM documents, the real SPDX example model."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from devmlops.offline import check_manifests
from tests.support.models import make_key, sign_with_key

SPDX_EXAMPLE = Path("spdx-examples/ai/example02")


def manifests(public_pem: str, bundle: str, digest: str, sbom: str, **sbom_policy: Any) -> list[dict[str, Any]]:
    policy = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ClusterModelPolicy",
        "metadata": {"name": "prod"},
        "spec": {
            "authorities": [{"name": "release", "key": {"publicKey": public_pem}}],
            "sbom": {"required": True, **sbom_policy},
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "evidence", "namespace": "ml"},
        "data": {"model.sig": base64.b64encode(bundle.encode()).decode()},
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "sbom", "namespace": "ml"},
        "data": {"sbom.json": sbom},
    }
    md = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "sentiment", "namespace": "ml"},
        "spec": {
            "model": {"name": "sentiment", "uri": "s3://m/sentiment", "digest": digest},
            "runtime": {"kind": "kserve"},
            "signature": {"secretKeyRef": {"name": "evidence", "key": "model.sig"}},
            "sbom": {"document": {"configMapKeyRef": {"name": "sbom", "key": "sbom.json"}}},
        },
    }
    return [policy, secret, config_map, md]


@pytest.fixture
def signed_example(shared_fixtures: Path, tmp_path: Path) -> tuple[str, str, str, str]:
    """The real fastText model from the SPDX example, signed with our own key (in a temporary copy)."""
    model = tmp_path / "sentiment"
    model.mkdir()
    shutil.copy(shared_fixtures / SPDX_EXAMPLE / "content" / "model.bin", model / "model.bin")
    key = make_key(tmp_path)
    bundle = sign_with_key(model, key, tmp_path / "model.sig")
    statement = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    digest = "sha256:" + statement["subject"][0]["digest"]["sha256"]
    sbom = (shared_fixtures / SPDX_EXAMPLE / "spdx3.0" / "sbom.spdx3.json").read_text()
    return key.public_pem, bundle, digest, sbom


def test_the_real_spdx_example_model_binds_by_name_only_when_the_policy_allows_it(
    signed_example: tuple[str, str, str, str],
) -> None:
    public, bundle, digest, sbom = signed_example
    strict = check_manifests(manifests(public, bundle, digest, sbom))[0].decision
    assert not strict.allowed
    assert "SBOM binding: got model component(s)" in strict.message
    by_name = check_manifests(manifests(public, bundle, digest, sbom, allowNameBinding=True))[0].decision
    assert by_name.allowed, by_name.message
    assert "spdx 3.0.1 SBOM valid" in next(r.reason for r in by_name.results if r.gate == "sbom")


def test_the_signed_file_digest_of_the_real_model_is_the_published_one(
    signed_example: tuple[str, str, str, str],
) -> None:
    _public, bundle, _digest, _sbom = signed_example
    statement = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    (resource,) = statement["predicate"]["resources"]
    assert resource["digest"] == "a88bf0de7dff74d740cd45048521d319ff7c2560085f2604af265561e72ec4bc"


def test_an_spdx3_sbom_that_adds_the_file_hash_binds_by_hash(signed_example: tuple[str, str, str, str]) -> None:
    public, bundle, digest, sbom = signed_example
    document = json.loads(sbom)
    for element in document["@graph"]:
        if element.get("name") == "model.bin":
            element["verifiedUsing"] = [
                {
                    "type": "Hash",
                    "algorithm": "sha256",
                    "hashValue": "a88bf0de7dff74d740cd45048521d319ff7c2560085f2604af265561e72ec4bc",
                }
            ]
    decision = check_manifests(manifests(public, bundle, digest, json.dumps(document)))[0].decision
    assert decision.allowed, decision.message


def test_a_cyclonedx_document_that_fails_its_schema_is_denied_naming_the_field(
    shared_fixtures: Path, tmp_path: Path
) -> None:
    key = make_key(tmp_path)
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w" * 100)
    bundle = sign_with_key(model, key, tmp_path / "model.sig")
    statement = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    digest = "sha256:" + statement["subject"][0]["digest"]["sha256"]
    invalid = (shared_fixtures / "cyclonedx-specification/1.6/invalid-hash-sha256-1.6.json").read_text()
    decision = check_manifests(manifests(key.public_pem, bundle, digest, invalid))[0].decision
    assert not decision.allowed
    assert "sbom gate (policy prod): SBOM invalid: CycloneDX 1.6 SBOM is invalid at" in decision.message
    assert "hashes" in decision.message
