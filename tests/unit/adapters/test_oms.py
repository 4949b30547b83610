"""OMS bundles verified without model bytes: our own keys and certificates, and model_signing v1.1.0's fixtures.

These tests also pin the private model_signing API the adapter still relies on: if it moves, they fail loudly.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from devmlops.adapters import oms
from devmlops.adapters.blobsign import sign_blob_with_key
from devmlops.adapters.oms import OmsVerifier
from devmlops.core.policy import Authority
from devmlops.core.ports import VerificationFailed
from tests.support.models import make_cert_chain, make_key, make_model, sign_with_certificate, sign_with_key

IBM_ISSUER = "https://sigstore.verify.ibm.com/oauth2"


def key_authority(pem: str, name: str = "release-key") -> Authority:
    return Authority(name=name, kind="key", public_key=pem)


# -- the private model_signing API the adapter still needs, pinned ------------------------------------------------

# Each private name and the parameters the adapter passes it (see the module docstring of adapters/oms.py for why).
PINNED = {
    "sign_sigstore_pb.Signature.read": ["path"],
    "sign_ec_key.Verifier": ["public_key_path"],
    "sign_ec_key.Verifier.verify": ["self", "signature"],
    "sign_certificate.Verifier": ["certificate_chain_paths", "log_fingerprints"],
    "sign_certificate.Verifier.verify": ["self", "signature"],
    "sign_certificate.Verifier._verify_certificates": ["self", "verification_material", "log_fingerprints"],
    "sign_sigstore_pb.Verifier._verify_signed_content": ["self", "signature"],
    "sign_ec_key.Signer": ["private_key_path", "password"],
    "sign_ec_key.Signer.sign": ["self", "payload"],
    "sign_certificate.Signer": ["private_key_path", "signing_certificate_path", "certificate_chain_paths"],
}
SRC = Path(oms.__file__).parents[1]


def private_names_used(path: Path) -> set[str]:
    """Dotted names rooted at an imported ``model_signing._signing`` module, and any ``._name`` reached on an
    object other than ``self`` (written ``?._name``)."""
    tree = ast.parse(path.read_text())
    modules = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "model_signing._signing"
        for alias in node.names
    }
    used: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        parts, inner = [node.attr], node.value
        while isinstance(inner, ast.Attribute):
            parts.insert(0, inner.attr)
            inner = inner.value
        root = inner.id if isinstance(inner, ast.Name) else ""
        if root in modules:
            used.add(".".join([root, *parts]))
        elif node.attr.startswith("_") and not node.attr.startswith("__") and root not in ("self", "cls"):
            used.add(f"?.{node.attr}")
    return used


def test_every_private_model_signing_name_the_adapter_uses_is_listed_and_pinned() -> None:
    assert set(oms.PRIVATE_API) == set(PINNED)
    for name in private_names_used(Path(oms.__file__)):
        if name.startswith("?."):
            assert any(entry.endswith(name[1:]) for entry in oms.PRIVATE_API), f"{name} is private and not listed"
        else:
            assert any(entry == name or entry.startswith(name + ".") for entry in oms.PRIVATE_API), name


def test_no_other_module_imports_model_signing_private_layers() -> None:
    importers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if re.search(r"^\s*(from|import) model_signing\._", path.read_text(), re.MULTILINE)
    )
    assert importers == ["adapters/oms.py"]


@pytest.mark.parametrize(("name", "parameters"), sorted(PINNED.items()))
def test_each_pinned_private_name_still_exists_with_the_same_parameters(name: str, parameters: list[str]) -> None:
    target: object = importlib.import_module(f"model_signing._signing.{name.split('.')[0]}")
    for attribute in name.split(".")[1:]:
        target = getattr(target, attribute)
    assert callable(target)
    assert list(inspect.signature(target).parameters) == parameters  # type: ignore[arg-type]


def test_the_installed_model_signing_is_in_the_range_pyproject_pins() -> None:
    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]
    requirement = next(Requirement(r) for r in project["dependencies"] if r.startswith("model-signing"))
    assert requirement.specifier.contains(importlib.metadata.version("model-signing"))
    assert requirement.specifier.contains("1.1.1")
    assert not requirement.specifier.contains("1.2.0")  # a new minor release must be looked at first


def test_a_bundle_signed_with_our_key_verifies_and_yields_the_signed_manifest(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    model = make_model(tmp_path / "fraud-model")
    signed = OmsVerifier().verify_model(
        sign_with_key(model, key, tmp_path / "model.sig"), key_authority(key.public_pem)
    )
    assert signed.model_name == "fraud-model"
    assert [name for name, _digest in signed.files] == ["config.json", "weights.bin"]
    assert signed.digest.startswith("sha256:")
    assert len(signed.digest) == len("sha256:") + 64
    assert signed.predicate_type == "https://model_signing/signature/v1.0"
    assert signed.signer.startswith("key sha256:")


def test_a_bundle_from_another_key_fails_with_a_reason(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    bundle = sign_with_key(model, make_key(tmp_path, "a"), tmp_path / "model.sig")
    with pytest.raises(VerificationFailed, match="rejected"):
        OmsVerifier().verify_model(bundle, key_authority(make_key(tmp_path, "b").public_pem))


def test_a_tampered_payload_fails(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    bundle = json.loads(sign_with_key(make_model(tmp_path / "m"), key, tmp_path / "model.sig"))
    payload = bundle["dsseEnvelope"]["payload"]
    bundle["dsseEnvelope"]["payload"] = payload[:-8] + ("A" if payload[-8] != "A" else "B") + payload[-7:]
    with pytest.raises(VerificationFailed):
        OmsVerifier().verify_model(json.dumps(bundle), key_authority(key.public_pem))


def test_a_certificate_chain_signature_verifies_against_its_ca_and_names_the_leaf(tmp_path: Path) -> None:
    chain = make_cert_chain(tmp_path)
    bundle = sign_with_certificate(make_model(tmp_path / "m"), chain, tmp_path / "model.sig")
    authority = Authority(name="corp-ca", kind="certificateChain", certificates=chain.ca_pem.read_text())
    assert OmsVerifier().verify_model(bundle, authority).signer == "CN=ml-release-signer"
    (tmp_path / "other").mkdir()
    other = make_cert_chain(tmp_path / "other")
    with pytest.raises(VerificationFailed, match=r"certificate chain rejected|signature rejected"):
        OmsVerifier().verify_model(
            bundle, Authority(name="other-ca", kind="certificateChain", certificates=other.ca_pem.read_text())
        )


def test_a_bundle_for_another_kind_of_authority_says_so(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    bundle = sign_with_key(make_model(tmp_path / "m"), key, tmp_path / "model.sig")
    keyless = Authority(name="ci", kind="keyless", identity="ci@example.com", issuer="https://issuer")
    with pytest.raises(VerificationFailed, match="signed with a public key, but authority ci expects a Sigstore"):
        OmsVerifier().verify_model(bundle, keyless)


@pytest.mark.parametrize("bundle", ["not json", "[]", "{}", '{"verificationMaterial": {"publicKey": {}}}'])
def test_garbage_bundles_are_failures_not_crashes(bundle: str, tmp_path: Path) -> None:
    with pytest.raises(VerificationFailed):
        OmsVerifier().verify_model(bundle, key_authority(make_key(tmp_path).public_pem))


def test_a_key_signed_sbom_bundle_verifies_and_a_changed_byte_does_not(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    sbom = b'{"bomFormat": "CycloneDX"}'
    bundle = sign_blob_with_key(sbom, key.private.read_bytes())
    assert OmsVerifier().verify_blob(sbom, bundle, key_authority(key.public_pem)).startswith("key sha256:")
    with pytest.raises(VerificationFailed, match="message digest"):
        OmsVerifier().verify_blob(sbom + b" ", bundle, key_authority(key.public_pem))


# -- model_signing v1.1.0's own output (../shared/fixtures) --------------------------------------------------


def fixture_bundle(shared: Path, mode: str) -> str:
    return (shared / "sigstore-model-transparency" / f"v1.1.0-{mode}" / "model.sig").read_text()


def test_v110_elliptic_key_bundle_verifies_offline(shared_fixtures: Path) -> None:
    pem = (shared_fixtures / "sigstore-model-transparency/keys/certificate/signing-key-pub.pem").read_text()
    signed = OmsVerifier().verify_model(fixture_bundle(shared_fixtures, "elliptic-key"), key_authority(pem))
    assert signed.model_name == "v1.1.0-elliptic-key"
    assert signed.digest == "sha256:92745110b1ab4368471cbe31664e10174e954b113a3df333db860317b2c6dec4"
    assert [name for name, _d in signed.files] == ["signme-1", "signme-2"]


def test_v110_certificate_bundle_verifies_against_the_ca_but_not_the_leaf_alone(shared_fixtures: Path) -> None:
    keys = shared_fixtures / "sigstore-model-transparency/keys/certificate"
    bundle = fixture_bundle(shared_fixtures, "certificate")
    ca = Authority(name="ca", kind="certificateChain", certificates=(keys / "ca-cert.pem").read_text())
    assert OmsVerifier().verify_model(bundle, ca).model_name == "v1.1.0-certificate"
    leaf_only = Authority(
        name="leaf", kind="certificateChain", certificates=(keys / "signing-key-cert.pem").read_text()
    )
    with pytest.raises(VerificationFailed):
        OmsVerifier().verify_model(bundle, leaf_only)


@pytest.mark.parametrize("trust", ["custom", "public-good"])
def test_v110_keyless_bundle_verifies_offline_with_the_trust_config_or_the_shipped_root(
    shared_fixtures: Path, trust: str
) -> None:
    config = (shared_fixtures / "sigstore-model-transparency/custom_trust_config.json").read_text()
    authority = Authority(
        name="ibm",
        kind="keyless",
        identity="stefanb@us.ibm.com",
        issuer=IBM_ISSUER,
        trust_config=config if trust == "custom" else "",
    )
    signed = OmsVerifier().verify_model(fixture_bundle(shared_fixtures, "sigstore"), authority)
    assert signed.signer == f"stefanb@us.ibm.com ({IBM_ISSUER})"


@pytest.mark.parametrize(
    ("identity", "regexp", "issuer", "complaint"),
    [
        ("mallory@us.ibm.com", "", IBM_ISSUER, "do not match"),
        ("stefanb@us.ibm.com", "", "https://accounts.google.com", "rejected"),
        ("", r"[a-z]+@example\.com", IBM_ISSUER, "do not match"),
    ],
)
def test_v110_keyless_bundle_fails_for_a_wrong_identity_or_issuer(
    shared_fixtures: Path, identity: str, regexp: str, issuer: str, complaint: str
) -> None:
    authority = Authority(name="x", kind="keyless", identity=identity, identity_regexp=regexp, issuer=issuer)
    with pytest.raises(VerificationFailed, match=complaint):
        OmsVerifier().verify_model(fixture_bundle(shared_fixtures, "sigstore"), authority)


def test_v110_keyless_bundle_matches_an_identity_regexp(shared_fixtures: Path) -> None:
    authority = Authority(name="ibm", kind="keyless", identity_regexp=r"[a-z]+@us\.ibm\.com", issuer=IBM_ISSUER)
    assert OmsVerifier().verify_model(fixture_bundle(shared_fixtures, "sigstore"), authority).model_name


def test_sigstore_python_wheel_bundle_verifies_and_a_changed_byte_fails(shared_fixtures: Path) -> None:
    folder = shared_fixtures / "sigstore-python"
    wheel = (folder / "bundle_v3_github.whl").read_bytes()
    bundle = (folder / "bundle_v3_github.whl.sigstore").read_text()
    authority = Authority(
        name="gh",
        kind="keyless",
        identity="https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
        issuer="https://token.actions.githubusercontent.com",
    )
    assert "rfc8785" in OmsVerifier().verify_blob(wheel, bundle, authority)
    with pytest.raises(VerificationFailed):
        OmsVerifier().verify_blob(wheel[:-1] + bytes([wheel[-1] ^ 1]), bundle, authority)


@pytest.mark.parametrize("name", ["bundle_cve_2022_36056.txt", "bundle_no_log_entry.txt"])
def test_sigstore_python_bad_bundles_fail(shared_fixtures: Path, name: str) -> None:
    folder = shared_fixtures / "sigstore-python"
    authority = Authority(name="any", kind="keyless", identity_regexp=".*", issuer="https://github.com/login/oauth")
    with pytest.raises(VerificationFailed):
        OmsVerifier().verify_blob((folder / name).read_bytes(), (folder / f"{name}.sigstore").read_text(), authority)
