"""spec.model.registry against a real MLflow tracking server (sqlite backend store, local artifact store, on
loopback, src/devmlops/harness/mlflow.py): `devmlops sign --mlflow` stores the signature with a registered version,
the resolver the webhook and the operator use finds it by alias, and decide() with the real OMS verifier admits the
version the alias points to and nothing else. Denials name the registry, the version, what was found and what was
expected; an unreachable or silent registry denies within the lookup's deadline. The last test measures what a
registered model costs an admission, warm and cold (docs/benchmarks.md quotes it).

The same path through the API server and the registered webhook, as the namespace editor, is
tests/integration/attacks/test_registry.py."""

from __future__ import annotations

import hashlib
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devmlops.adapters.evidence import resolve_evidence
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.registrycache import CachingRegistry, mlflow_resolver
from devmlops.adapters.verifycache import CachingVerifier
from devmlops.cli import cli
from devmlops.core.decision import decide
from devmlops.core.gates.registry import BUNDLE_TAG, DIGEST_TAG, SBOM_TAG
from devmlops.core.model import Decision
from devmlops.core.policy import Authority, PolicySet, compile_policy
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.harness.mlflow import mlflow_server
from tests.integration.support import cyclonedx_sbom
from tests.support.lookups import EmptyCluster
from tests.support.models import KeyFiles, make_key, make_model

# A cold cache builds the registries first (`make registries` does it before `make test`).
pytestmark = pytest.mark.timeout(900)

MD = GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment")
SOURCES = {"1": "s3://models-prod/iris/1", "2": "s3://models-prod/iris/2"}


@dataclass(frozen=True)
class Registered:
    url: str
    key: KeyFiles
    digests: dict[str, str]  # version -> signed digest
    client: Any


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


def _client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def _sign(url: str, ref: str, key: KeyFiles, *paths: str, sbom: Path | None = None) -> str:
    args = ["sign", *paths, "--mlflow", ref, "--private-key", str(key.private), "--tracking-uri", url]
    result = CliRunner().invoke(cli, [*args, *(["--sbom", str(sbom)] if sbom else [])], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def registered(mlflow_url: str, tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """Model "iris" with versions 1 and 2 (different bytes), both signed with `devmlops sign --mlflow`; the alias
    champion points to version 1."""
    work = tmp_path_factory.mktemp("iris")
    key = make_key(work, "release")
    client = _client(mlflow_url)
    client.create_registered_model("iris")
    digests = {}
    for version, source in SOURCES.items():
        made = client.create_model_version("iris", source=source)
        assert str(made.version) == version
        files = make_model(work / f"iris-{version}", {"weights.bin": version.encode() * 1024})
        sbom = work / f"sbom-{version}.json"
        weights = hashlib.sha256((files / "weights.bin").read_bytes()).hexdigest()
        sbom.write_text(cyclonedx_sbom("iris", "sha256:" + weights))  # a signed file's digest binds it
        _sign(mlflow_url, f"iris/{version}", key, str(files), sbom=sbom)
        digests[version] = client.get_model_version("iris", version).tags[DIGEST_TAG]
    client.set_registered_model_alias("iris", "champion", "1")
    return Registered(mlflow_url, key, digests, client)


def _policy(key: KeyFiles, **spec: Any) -> PolicySet:
    body = {"authorities": [{"name": "release", "key": {"publicKey": key.public_pem}}], **spec}
    return PolicySet((compile_policy({"metadata": {"name": "registry", "resourceVersion": "1"}, "spec": body}),))


def _model(digest: str, uri: str, **mlflow: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris", "namespace": "team-a"},
        "spec": {
            "model": {"name": "iris", "uri": uri, "digest": digest, "registry": {"mlflow": {"name": "iris", **mlflow}}},
            "runtime": {"kind": "kserve"},
        },
    }


def _decide(obj: dict[str, Any], policies: PolicySet, resolver: Any, verifier: Any) -> Decision:
    request = AdmissionRequest(
        uid="u",
        kind=MD,
        operation="CREATE",
        namespace="team-a",
        name="iris",
        username="alice",
        groups=(),
        object=obj,
        old_object=None,
    )
    return decide(request, policies, resolve_evidence(obj, EmptyCluster(), resolver), verifier)


def _registry_reason(decision: Decision) -> str:
    return next(r.reason for r in decision.results if r.gate == "registry")


def test_sign_mlflow_stores_bundle_digest_and_ml_bom_as_the_versions_tags(registered: Registered) -> None:
    tags = registered.client.get_model_version("iris", "1").tags
    authority = Authority(name="release", kind="key", public_key=registered.key.public_pem)
    signed = OmsVerifier().verify_model(tags[BUNDLE_TAG], authority)
    assert signed.digest == tags[DIGEST_TAG] == registered.digests["1"]
    assert registered.digests["1"] != registered.digests["2"]
    assert '"bomFormat": "CycloneDX"' in tags[SBOM_TAG]


def test_sign_mlflow_without_files_downloads_the_version_from_the_artifact_store(
    registered: Registered, tmp_path: Path
) -> None:
    files = make_model(tmp_path / "model", {"weights.bin": b"logged" * 100, "config.json": b"{}"})
    client = registered.client
    experiment = client.create_experiment("registry-tests")
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(files), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("logged")
    client.create_model_version("logged", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    output = _sign(registered.url, "logged/1", registered.key)
    stored = client.get_model_version("logged", "1").tags
    authority = Authority(name="release", kind="key", public_key=registered.key.public_pem)
    signed = OmsVerifier().verify_model(stored[BUNDLE_TAG], authority)
    assert sorted(path for path, _digest in signed.files) == ["config.json", "weights.bin"]
    assert f"set spec.model.digest: {stored[DIGEST_TAG]}" in output
    expected = {
        name: "sha256:" + hashlib.sha256((files / name).read_bytes()).hexdigest()
        for name in ("config.json", "weights.bin")
    }
    assert dict(signed.files) == expected  # what was downloaded and signed are the bytes logged with the version


def test_the_version_the_alias_points_to_is_admitted_and_named(registered: Registered) -> None:
    resolver = mlflow_resolver(registered.url, timeout_seconds=2, ttl_seconds=30)
    policies = _policy(registered.key, registry={"requiredAliases": ["champion"], "forbiddenTags": ["quarantine"]})
    obj = _model(registered.digests["1"], SOURCES["1"], alias="champion")
    decision = _decide(obj, policies, resolver, OmsVerifier())
    assert decision.allowed, decision.message
    assert _registry_reason(decision) == (
        f"MLflow {registered.url}: model 'iris' alias champion (version 1): stored at '{SOURCES['1']}', "
        f"digest {registered.digests['1']}"
    )
    assert decision.signer.startswith("key sha256:")  # the EC key that signed, by its fingerprint


def test_after_the_alias_moves_the_old_digest_is_denied_and_the_new_version_admitted(registered: Registered) -> None:
    policies = _policy(registered.key, registry={"requiredAliases": ["champion"]})
    registered.client.set_registered_model_alias("iris", "champion", "2")
    try:
        resolver = mlflow_resolver(registered.url, timeout_seconds=2, ttl_seconds=30)
        old = _decide(
            _model(registered.digests["1"], SOURCES["1"], alias="champion"), policies, resolver, OmsVerifier()
        )
        assert not old.allowed
        assert _registry_reason(old).startswith(f"spec.model.uri: got '{SOURCES['1']}', expected '{SOURCES['2']}'")
        assert _registry_reason(old).endswith("(and 1 more)")  # the digest too, as the next decision shows
        stale = _decide(
            _model(registered.digests["1"], SOURCES["2"], alias="champion"), policies, resolver, OmsVerifier()
        )
        assert _registry_reason(stale) == (
            f"spec.model.digest: got {registered.digests['1']}, expected {registered.digests['2']}, the digest "
            f"MLflow {registered.url}: model 'iris' alias champion (version 2) carries (tag {DIGEST_TAG})"
        )
        new = _decide(
            _model(registered.digests["2"], SOURCES["2"], alias="champion"), policies, resolver, OmsVerifier()
        )
        assert new.allowed, new.message
    finally:
        registered.client.set_registered_model_alias("iris", "champion", "1")


def test_a_version_tagged_with_a_forbidden_tag_is_denied(registered: Registered) -> None:
    policies = _policy(registered.key, registry={"forbiddenTags": ["quarantine=true"]})
    registered.client.set_model_version_tag("iris", "1", "quarantine", "true")
    try:
        resolver = mlflow_resolver(registered.url, timeout_seconds=2, ttl_seconds=30)
        decision = _decide(
            _model(registered.digests["1"], SOURCES["1"], version="1"), policies, resolver, OmsVerifier()
        )
    finally:
        registered.client.delete_model_version_tag("iris", "1", "quarantine")
    assert not decision.allowed
    assert _registry_reason(decision) == (
        f"MLflow {registered.url}: model 'iris' version 1: carries the tag 'quarantine=true', which policy registry "
        "forbids ('quarantine=true')"
    )


def test_an_unsigned_version_is_denied_by_the_signature_gate_naming_the_missing_tag(registered: Registered) -> None:
    registered.client.create_model_version("iris", source="s3://models-prod/iris/3")
    registered.client.set_model_version_tag("iris", "3", DIGEST_TAG, registered.digests["1"])  # a digest, no bundle
    resolver = mlflow_resolver(registered.url, timeout_seconds=2, ttl_seconds=30)
    decision = _decide(
        _model(registered.digests["1"], "s3://models-prod/iris/3", version="3"),
        _policy(registered.key),
        resolver,
        OmsVerifier(),
    )
    assert not decision.allowed
    signature = next(r for r in decision.results if r.gate == "signature")
    assert f"has no tag {BUNDLE_TAG}" in signature.reason


def test_an_unknown_alias_denies_with_the_registrys_answer(registered: Registered) -> None:
    resolver = mlflow_resolver(registered.url, timeout_seconds=2, ttl_seconds=30)
    decision = _decide(
        _model(registered.digests["1"], SOURCES["1"], alias="nope"), _policy(registered.key), resolver, OmsVerifier()
    )
    assert not decision.allowed
    assert _registry_reason(decision) == (
        f"MLflow {registered.url}: model 'iris' alias nope: lookup failed: INVALID_PARAMETER_VALUE: Registered "
        "model alias nope not found."
    )


def test_an_unreachable_registry_denies_at_once(registered: Registered) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        resolver = mlflow_resolver(f"http://127.0.0.1:{port}", timeout_seconds=2, ttl_seconds=30)
        started = time.monotonic()
        decision = _decide(
            _model(registered.digests["1"], SOURCES["1"], alias="champion"),
            _policy(registered.key),
            resolver,
            OmsVerifier(),
        )
    assert time.monotonic() - started < 2
    assert not decision.allowed
    assert "lookup failed:" in _registry_reason(decision)


def test_a_registry_that_never_answers_denies_at_the_deadline(registered: Registered) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts into the backlog, never reads or answers
        resolver = mlflow_resolver(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_seconds=0.5, ttl_seconds=30)
        started = time.monotonic()
        decision = _decide(
            _model(registered.digests["1"], SOURCES["1"], alias="champion"),
            _policy(registered.key),
            resolver,
            OmsVerifier(),
        )
        took = time.monotonic() - started
    assert took < 1.5
    assert not decision.allowed
    assert _registry_reason(decision).endswith("model 'iris' alias champion: lookup timed out after 0.5s")


def test_resolution_and_verification_cost_per_admission_warm_and_cold(registered: Registered) -> None:
    """Warm: the registry entry and the verification result cached (what every admission after the first within the
    TTL pays). Cold: both caches empty, one lookup over loopback HTTP to MLflow and one signature verification."""
    policies = _policy(registered.key, registry={"requiredAliases": ["champion"]})
    obj = _model(registered.digests["1"], SOURCES["1"], alias="champion")
    resolver = mlflow_resolver(registered.url, timeout_seconds=2, ttl_seconds=300)
    assert isinstance(resolver, CachingRegistry)
    verifier = CachingVerifier(OmsVerifier())
    cold: list[float] = []
    for _ in range(10):
        resolver.clear()
        verifier.clear()
        started = time.perf_counter()
        assert _decide(obj, policies, resolver, verifier).allowed
        cold.append(time.perf_counter() - started)
    warm: list[float] = []
    for _ in range(200):
        started = time.perf_counter()
        assert _decide(obj, policies, resolver, verifier).allowed
        warm.append(time.perf_counter() - started)
    warm_ms, cold_ms = statistics.median(warm) * 1000, statistics.median(cold) * 1000
    p99 = sorted(warm)[int(len(warm) * 0.99)] * 1000
    print(f"\nregistry admission cost: warm median {warm_ms:.3f} ms (p99 {p99:.3f} ms), cold median {cold_ms:.1f} ms")
    assert warm_ms < 5, f"warm median {warm_ms:.3f} ms, expected under 5 ms"


def test_devmlops_check_decides_a_registered_model_offline_with_the_registry_and_denies_without(
    registered: Registered, tmp_path: Path
) -> None:
    import yaml

    policy = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ClusterModelPolicy",
        "metadata": {"name": "registry"},
        "spec": {
            "authorities": [{"name": "release", "key": {"publicKey": registered.key.public_pem}}],
            "registry": {"requiredAliases": ["champion"]},
        },
    }
    model = {"apiVersion": "devmlops.io/v1alpha1", "kind": "ModelDeployment"}
    model.update(_model(registered.digests["1"], SOURCES["1"], alias="champion"))
    manifest = tmp_path / "iris.yaml"
    manifest.write_text(yaml.safe_dump_all([policy, model]))
    runner = CliRunner()
    found = runner.invoke(cli, ["check", "-f", str(manifest), "--mlflow-tracking-uri", registered.url])
    assert found.exit_code == 0, found.output
    without = runner.invoke(cli, ["check", "-f", str(manifest)], env={"MLFLOW_TRACKING_URI": ""})
    assert without.exit_code == 1, without.output
    assert "no MLflow registry is configured for devmlops" in without.output
