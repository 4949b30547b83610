"""The `devmlops` verification CLI contract: flags, outputs and exit codes (0 ok, 1 not verified/denied, 2 usage)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devmlops.adapters.blobsign import sign_blob_with_key
from tests.support.models import make_cert_chain, make_key, make_model, sign_with_key

IBM = ["--identity", "stefanb@us.ibm.com", "--issuer", "https://sigstore.verify.ibm.com/oauth2"]


def devmlops(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devmlops", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def signed_model(tmp_path: Path) -> tuple[Path, Path, Path]:
    key = make_key(tmp_path)
    model = make_model(tmp_path / "model")
    signature = tmp_path / "model.sig"
    sign_with_key(model, key, signature)
    return model, signature, key.public


def test_verify_passes_for_untouched_bytes_and_reports_json(signed_model: tuple[Path, Path, Path]) -> None:
    model, signature, public = signed_model
    result = devmlops("verify", model, "--signature", signature, "--public-key", public, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["verified"], report["model"], report["files"]) == (True, "model", 2)
    assert report["digest"].startswith("sha256:")


def test_verify_fails_with_exit_1_for_a_changed_byte_an_extra_file_and_a_missing_file(
    signed_model: tuple[Path, Path, Path],
) -> None:
    model, signature, public = signed_model
    weights = model / "weights.bin"
    original = weights.read_bytes()
    weights.write_bytes(bytes([original[0] ^ 1]) + original[1:])
    changed = devmlops("verify", model, "--signature", signature, "--public-key", public)
    assert changed.returncode == 1
    assert "weights.bin: got sha256:" in changed.stderr
    weights.write_bytes(original)
    (model / "extra.bin").write_bytes(b"x")
    extra = devmlops("verify", model, "--signature", signature, "--public-key", public, "--json")
    assert extra.returncode == 1
    assert json.loads(extra.stdout)["problems"] == ["unsigned file present: extra.bin"]
    assert (
        devmlops(
            "verify", model, "--signature", signature, "--public-key", public, "--ignore-path", "extra.bin"
        ).returncode
        == 0
    )
    (model / "config.json").unlink()
    missing = devmlops("verify", model, "--signature", signature, "--public-key", public, "--ignore-path", "extra.bin")
    assert "signed file missing: config.json" in missing.stderr


def test_verify_with_the_wrong_key_is_exit_1_and_bad_usage_is_exit_2(
    signed_model: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, signature, _public = signed_model
    other = make_key(tmp_path, "other").public
    assert devmlops("verify", model, "--signature", signature, "--public-key", other).returncode == 1
    both = devmlops("verify", model, "--signature", signature, "--public-key", other, *IBM)
    assert both.returncode == 2
    assert "exactly one of" in both.stderr
    assert devmlops("verify", model, "--signature", tmp_path / "nope.sig", "--public-key", other).returncode == 2


def test_verify_accepts_model_signing_v110_output_in_all_three_modes(shared_fixtures: Path, tmp_path: Path) -> None:
    base = shared_fixtures / "sigstore-model-transparency"
    keys = base / "keys" / "certificate"
    modes = {
        "elliptic-key": ["--public-key", keys / "signing-key-pub.pem"],
        "certificate": ["--certificate-chain", keys / "ca-cert.pem"],
        "sigstore": [*IBM, "--trust-config", base / "custom_trust_config.json"],
    }
    for mode, flags in modes.items():
        folder = base / f"v1.1.0-{mode}"
        ok = devmlops("verify", folder, "--signature", folder / "model.sig", *flags, "--ignore-path", "ignore-me")
        assert ok.returncode == 0, (mode, ok.stderr)
        copy = tmp_path / mode
        shutil.copytree(folder, copy)
        (copy / "signme-1").write_bytes(b"tampered" + (copy / "signme-1").read_bytes()[8:])
        bad = devmlops("verify", copy, "--signature", copy / "model.sig", *flags, "--ignore-path", "ignore-me")
        assert bad.returncode == 1, mode
        assert "signme-1: got" in bad.stderr


def test_verify_bundle_checks_an_sbom_signature(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    sbom = tmp_path / "sbom.json"
    sbom.write_text('{"bomFormat": "CycloneDX"}')
    bundle = tmp_path / "sbom.json.sigstore"
    bundle.write_text(sign_blob_with_key(sbom.read_bytes(), key.private.read_bytes()))
    assert devmlops("verify-bundle", sbom, "--bundle", bundle, "--public-key", key.public).returncode == 0
    sbom.write_text('{"bomFormat": "CycloneDX", "x": 1}')
    failed = devmlops("verify-bundle", sbom, "--bundle", bundle, "--public-key", key.public, "--json")
    assert failed.returncode == 1
    assert "message digest" in json.loads(failed.stdout)["reason"]


def test_verify_bundle_verifies_a_real_sigstore_bundle_offline(shared_fixtures: Path) -> None:
    folder = shared_fixtures / "sigstore-python"
    result = devmlops(
        "verify-bundle",
        folder / "bundle_v3_github.whl",
        "--bundle",
        folder / "bundle_v3_github.whl.sigstore",
        "--identity",
        "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
        "--issuer",
        "https://token.actions.githubusercontent.com",
    )
    assert result.returncode == 0, result.stderr


def test_sbom_check_exit_codes(shared_fixtures: Path, tmp_path: Path) -> None:
    specs = shared_fixtures / "cyclonedx-specification" / "1.6"
    valid = devmlops("sbom", "check", specs / "valid-machine-learning-1.6.json", "--json")
    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout)["format"] == "cyclonedx"
    assert devmlops("sbom", "check", specs / "invalid-hash-sha256-1.6.json").returncode == 1
    assert devmlops("sbom", "check", tmp_path / "missing.json").returncode == 2


def test_sign_then_verify_round_trips_and_prints_the_digest_to_put_in_the_manifest(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    model = make_model(tmp_path / "model")
    signed = devmlops("sign", model, "--output", model / "model.sig", "--private-key", key.private)
    assert signed.returncode == 0, signed.stderr
    assert "set spec.model.digest: sha256:" in signed.stdout
    verified = devmlops("verify", model, "--signature", model / "model.sig", "--public-key", key.public)
    assert verified.returncode == 0, verified.stderr


def test_sign_with_a_certificate_chain_verifies_against_the_ca(tmp_path: Path) -> None:
    chain = make_cert_chain(tmp_path)
    model = make_model(tmp_path / "model")
    combined = tmp_path / "leaf-and-intermediate.pem"
    combined.write_bytes(chain.leaf_cert.read_bytes() + chain.chain.read_bytes())
    signed = devmlops(
        "sign", model, "--output", tmp_path / "m.sig", "--private-key", chain.leaf_key, "--certificate-chain", combined
    )
    assert signed.returncode == 0, signed.stderr
    ok = devmlops("verify", model, "--signature", tmp_path / "m.sig", "--certificate-chain", chain.ca_pem)
    assert ok.returncode == 0, ok.stderr


def test_check_reports_a_malformed_manifest_as_an_error_naming_the_field_and_decides_the_rest(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    good = {"name": "fraud", "uri": "s3://models/fraud", "digest": digest}
    documents = [
        {"kind": "ModelDeployment", "metadata": {"name": "bad", "namespace": "ml"}, "spec": {"model": "oops"}},
        {
            "kind": "ModelDeployment",
            "metadata": {"name": "good", "namespace": "ml"},
            "spec": {"model": good, "runtime": {"kind": "kserve", "replicas": "2"}},
        },
        {"kind": "ModelDeployment", "metadata": {"name": "fine", "namespace": "ml"}, "spec": {"model": good,
         "runtime": {"kind": "kserve"}}},
    ]  # fmt: skip
    manifest = tmp_path / "md.yaml"
    manifest.write_text("\n---\n".join(json.dumps(d) for d in documents))
    result = devmlops("check", "-f", manifest, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    report = {item["name"]: item for item in json.loads(result.stdout)}
    assert "spec.model: found 'oops', expected an object" in report["bad"]["error"]
    assert "spec.runtime: missing" in report["bad"]["error"]
    assert "spec.runtime.replicas: found '2', expected an integer" in report["good"]["error"]
    assert report["fine"]["error"] == ""  # still decided: no policy selects it, so it is denied, not lost
    assert "no ClusterModelPolicy selects model 'fraud'" in report["fine"]["message"]
    text = devmlops("check", "-f", manifest)
    assert "ERROR    ml/bad: ModelDeployment ml/bad: spec.model: found 'oops'" in text.stdout
    assert "Traceback" not in text.stderr
