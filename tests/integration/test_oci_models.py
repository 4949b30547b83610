"""Models stored as OCI artifacts (oci://host/repository@sha256:...) in a real distribution registry on loopback:
`devmlops sign --oci` pulls the artifact by digest, signs it and attaches the OMS bundle as an OCI referrer; the
webhook's evidence finds that bundle, and decide() with the real OMS verifier admits the model without a
spec.signature; a tag instead of a digest, an artifact only another key signed, or an unreadable registry is denied;
the storage initializer pulls by digest and checks the bytes against the signature."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devmlops.adapters.evidence import resolve_evidence
from devmlops.adapters.ociartifact import OciModel
from devmlops.adapters.ocisig import ImageSignatureChecker, OciClient, OciError
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.servingverify import run_plan
from devmlops.cli import cli
from devmlops.core.decision import decide
from devmlops.core.model import Decision
from devmlops.core.pinning import parse_reference
from devmlops.core.plan import VerificationPlan
from devmlops.core.policy import PolicySet, compile_policy
from devmlops.core.ports import VerificationFailed
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.harness.oci import oci_registry
from tests.support.lookups import EmptyCluster
from tests.support.models import KeyFiles, make_key, make_model

# A cold cache builds the registries first (`make registries` does it before `make test`).
pytestmark = pytest.mark.timeout(900)

MD = GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment")


@dataclass(frozen=True)
class Artifacts:
    host: str
    key: KeyFiles
    signed: str  # oci://...@sha256:..., signed with key
    signed_digest: str  # the OMS subject digest
    foreign: str  # signed by another key only
    foreign_digest: str


def _sign(host: str, uri: str, key: KeyFiles) -> str:
    args = ["sign", "--oci", uri, "--private-key", str(key.private), "--oci-plain-http", host]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.rsplit("set spec.model.digest: ", 1)[1].strip()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Artifacts]:
    work = tmp_path_factory.mktemp("oci-models")
    with oci_registry(work / "registry") as host:
        key, other = make_key(work, "release"), make_key(work, "mallory")
        client = OciModel(plain_http=[host])
        try:
            signed = client.push(host, "models/fraud", "1.0", make_model(work / "fraud"))
            foreign = client.push(host, "models/fraud", "rogue", make_model(work / "rogue", {"w.bin": b"rogue" * 99}))
        finally:
            client.close()
        yield Artifacts(host, key, signed, _sign(host, signed, key), foreign, _sign(host, foreign, other))


def _decide(artifacts: Artifacts, uri: str, digest: str) -> Decision:
    policies = PolicySet(
        (
            compile_policy(
                {
                    "metadata": {"name": "oci", "resourceVersion": "1"},
                    "spec": {"authorities": [{"name": "release", "key": {"publicKey": artifacts.key.public_pem}}]},
                }
            ),
        )
    )
    obj: dict[str, Any] = {
        "metadata": {"name": "fraud", "namespace": "team-a"},
        "spec": {"model": {"name": "fraud", "uri": uri, "digest": digest}, "runtime": {"kind": "kserve"}},
    }
    checker = ImageSignatureChecker(OciClient(plain_http=[artifacts.host]), timeout_seconds=2)
    try:
        evidence = resolve_evidence(obj, EmptyCluster(), images=checker)
    finally:
        checker.close()
    request = AdmissionRequest(
        uid="u", kind=MD, operation="CREATE", namespace="team-a", name="fraud", username="alice", groups=(),
        object=obj, old_object=None,
    )  # fmt: skip
    return decide(request, policies, evidence, OmsVerifier())


def _reason(decision: Decision, gate: str) -> str:
    return next(r.reason for r in decision.results if r.gate == gate)


def test_a_signed_oci_model_is_admitted_by_the_bundle_attached_to_its_digest(artifacts: Artifacts) -> None:
    decision = _decide(artifacts, artifacts.signed, artifacts.signed_digest)
    assert decision.allowed, decision.message
    assert _reason(decision, "registry") == f"spec.model.uri '{artifacts.signed}' is an OCI artifact pinned by digest"
    assert "OMS signature verified for release" in _reason(decision, "signature")


def test_an_oci_model_named_by_tag_is_denied(artifacts: Artifacts) -> None:
    tagged = artifacts.signed.split("@")[0] + ":1.0"
    decision = _decide(artifacts, tagged, artifacts.signed_digest)
    assert not decision.allowed
    assert _reason(decision, "registry") == (
        f"spec.model.uri: got '{tagged}', expected an OCI artifact pinned by its manifest digest "
        "(oci://host/repository@sha256:...)"
    )


def test_a_tag_resolves_to_the_digest_of_the_manifest_it_names_now(artifacts: Artifacts) -> None:
    """What the mutating webhook asks before it pins a tag: the registry's answer, hashed here (the header must
    agree); a tag the registry does not have, or a registry that does not answer, is an error naming it."""
    name = artifacts.signed.split("@")[0]
    checker = ImageSignatureChecker(OciClient(plain_http=[artifacts.host]), timeout_seconds=2)
    try:
        resolved = {
            tag: checker.resolve(parse_reference(f"{name}:{tag}", field="f", oci_uri=True)) for tag in ("1.0", "rogue")
        }
        with pytest.raises(OciError, match=rf"{artifacts.host} has no tag 'nope' in models/fraud \(HTTP 404\)"):
            checker.resolve(parse_reference(f"{name}:nope", field="f", oci_uri=True))
        with pytest.raises(OciError, match=re.escape("127.0.0.1:9: ConnectError")):
            checker.resolve(parse_reference("oci://127.0.0.1:9/models/fraud:1.0", field="f", oci_uri=True))
    finally:
        checker.close()
    assert resolved == {"1.0": artifacts.signed.split("@")[1], "rogue": artifacts.foreign.split("@")[1]}


def test_an_oci_model_only_another_key_signed_is_denied(artifacts: Artifacts) -> None:
    decision = _decide(artifacts, artifacts.foreign, artifacts.foreign_digest)
    assert not decision.allowed
    assert "got 0 verified authorities" in _reason(decision, "signature")


def test_an_unreadable_registry_denies_naming_the_model(artifacts: Artifacts) -> None:
    elsewhere = artifacts.signed.replace(artifacts.host, "127.0.0.1:9")
    decision = _decide(artifacts, elsewhere, artifacts.signed_digest)
    assert not decision.allowed
    assert f"OCI referrers of {elsewhere} could not be read" in _reason(decision, "signature")


def test_the_storage_initializer_pulls_by_digest_and_checks_the_bytes(
    artifacts: Artifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVMLOPS_OCI_PLAIN_HTTP", artifacts.host)
    checker = ImageSignatureChecker(OciClient(plain_http=[artifacts.host]), timeout_seconds=2)
    try:
        signed_bundle, foreign_bundle = (checker.model_bundles(u)[0] for u in (artifacts.signed, artifacts.foreign))
    finally:
        checker.close()
    policy = compile_policy(
        {
            "metadata": {"name": "oci"},
            "spec": {"authorities": [{"name": "r", "key": {"publicKey": artifacts.key.public_pem}}]},
        }
    )
    plan = VerificationPlan.for_policies(signed_bundle, artifacts.signed_digest, [policy])
    check = run_plan("devmlops+" + artifacts.signed, tmp_path / "served", plan)
    assert (check.ok, check.files) == (True, 2)
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == ["config.json", "weights.bin"]
    foreign_plan = VerificationPlan.for_policies(foreign_bundle, artifacts.foreign_digest, [policy])
    with pytest.raises(VerificationFailed):
        run_plan("devmlops+" + artifacts.foreign, tmp_path / "rogue", foreign_plan)


def test_whoever_may_push_can_hide_an_oci_models_signature_which_denies_and_never_admits(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    """The referrers of an artifact are anyone's who may push, and where the registry has no referrers API (the
    distribution registry) their index is the mutable tag sha256-<hex>: a pusher adds 16 bundles of their own and
    rewrites the index with them first. devmlops reads the first 16 bundle referrers, so the release signature is
    no longer seen: the model is denied (availability), never admitted. docs/threat-model.md states it as a residual:
    give spec.signature where that matters."""
    import json

    import httpx

    from devmlops.adapters.ociartifact import parse_model_uri

    client = OciModel(plain_http=[artifacts.host])
    try:
        uri = client.push(artifacts.host, "models/hidden", "1.0", make_model(tmp_path / "hidden"))
        digest = _sign(artifacts.host, uri, artifacts.key)
        assert _decide(artifacts, uri, digest).allowed  # control: its signature is found and verifies
        for junk in range(16):
            client.attach_signature(uri, json.dumps({"junk": junk}))
    finally:
        client.close()
    _host, repository, manifest = parse_model_uri(uri)
    index_url = f"http://{artifacts.host}/v2/{repository}/manifests/{manifest.replace(':', '-')}"
    index_type = "application/vnd.oci.image.index.v1+json"
    index = httpx.get(index_url, headers={"Accept": index_type}).json()
    index["manifests"] = index["manifests"][1:] + index["manifests"][:1]  # the release signature last
    body = json.dumps(index).encode()
    assert httpx.put(index_url, content=body, headers={"Content-Type": index_type}).status_code == 201
    decision = _decide(artifacts, uri, digest)
    assert not decision.allowed
    assert "got 0 verified authorities" in _reason(decision, "signature")
