"""The registry gate inside decide(): a ModelDeployment naming spec.model.registry is bound to the version the shell
resolved (storage location, recorded digest, alias), policies may demand an alias and forbid tags, and a lookup
that failed or never happened denies. The verifier port is faked; tests/integration/test_mlflow_registry.py runs
the same against a real MLflow server and real signatures."""

from __future__ import annotations

from typing import Any

import pytest

from devmlops.core.decision import decide
from devmlops.core.evidence import Document, Evidence, RegistryVersion
from devmlops.core.gates.registry import BUNDLE_TAG, DIGEST_TAG
from devmlops.core.manifests import parse_model_deployment
from devmlops.errors import InvalidInputError
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle
from tests.unit.core.test_gates import policies, policy, request

URI = "s3://models-prod/iris/3"
REGISTRY = "MLflow http://127.0.0.1:5000"
OTHER = "sha256:" + "ef" * 32


def md_spec(*, alias: str | None = "champion", version: str | None = None, **model: Any) -> dict[str, Any]:
    mlflow: dict[str, Any] = {"name": "iris"}
    mlflow.update({"alias": alias} if alias is not None else {})
    mlflow.update({"version": version} if version is not None else {})
    return {
        "model": {"name": "iris", "uri": URI, "digest": DIGEST, "registry": {"mlflow": mlflow}, **model},
        "runtime": {"kind": "kserve"},
    }


def found(**overrides: Any) -> RegistryVersion:
    base: dict[str, Any] = {
        "registry": REGISTRY,
        "name": "iris",
        "requested": "alias champion",
        "version": "3",
        "source": URI,
        "aliases": ("champion",),
        "tags": {DIGEST_TAG: DIGEST, BUNDLE_TAG: bundle("release", model="iris")},
    }
    base.update(overrides)
    return RegistryVersion(**base)


def evidence_of(version: RegistryVersion | None) -> Evidence:
    """What adapters/evidence.py makes of a resolved version: its bundle tag is the signature."""
    signatures: tuple[Document, ...] = ()
    if version is not None and BUNDLE_TAG in version.tags:
        signatures = (Document(f"{version.describe()} tag {BUNDLE_TAG}", text=version.tags[BUNDLE_TAG]),)
    return Evidence(signatures=signatures, namespace_labels={"team": "a"}, registry=version)


def decided(spec: dict[str, Any], version: RegistryVersion | None, **policy_spec: Any) -> Any:
    return decide(request(spec), policies(policy(**policy_spec)), evidence_of(version), FakeVerifier())


def registry_reason(decision: Any) -> str:
    return next(r.reason for r in decision.results if r.gate == "registry")


def test_a_version_resolved_by_alias_that_matches_uri_and_digest_is_admitted_and_named() -> None:
    decision = decided(md_spec(), found(), registry={"requiredAliases": ["champion"]})
    assert decision.allowed, decision.message
    assert registry_reason(decision) == (
        f"{REGISTRY}: model 'iris' alias champion (version 3): stored at '{URI}', digest {DIGEST}"
    )


def test_a_moved_alias_denies_naming_registry_version_found_and_expected_digest() -> None:
    moved = found(version="4", tags={DIGEST_TAG: OTHER, BUNDLE_TAG: bundle("release", OTHER, "iris")})
    decision = decided(md_spec(), moved)
    assert not decision.allowed
    assert registry_reason(decision) == (
        f"spec.model.digest: got {DIGEST}, expected {OTHER}, the digest {REGISTRY}: model 'iris' alias champion "
        f"(version 4) carries (tag {DIGEST_TAG})"
    )


def test_a_uri_other_than_the_versions_storage_location_is_denied() -> None:
    decision = decided(md_spec(uri="s3://mallory/iris"), found())
    assert not decision.allowed
    assert registry_reason(decision).startswith(
        f"spec.model.uri: got 's3://mallory/iris', expected '{URI}', where {REGISTRY}: model 'iris'"
    )


def test_a_version_without_the_digest_tag_is_denied_with_the_fix() -> None:
    decision = decided(md_spec(), found(tags={BUNDLE_TAG: bundle("release", model="iris")}))
    assert not decision.allowed
    result = next(r for r in decision.results if r.gate == "registry")
    assert f"no tag {DIGEST_TAG}, expected the signed digest" in result.reason
    assert "devmlops sign --mlflow" in result.hint


def test_a_policy_that_requires_an_alias_refuses_a_bare_version_number() -> None:
    spec = md_spec(alias=None, version="3")
    decision = decided(spec, found(requested="version 3"), registry={"requiredAliases": ["champion"]})
    assert not decision.allowed
    assert registry_reason(decision) == (
        "spec.model.registry.mlflow: got version 3, expected one of the aliases ['champion'] (policy prod)"
    )


def test_a_policy_that_requires_a_registry_refuses_a_model_named_by_uri_alone() -> None:
    spec = md_spec()
    del spec["model"]["registry"]
    spec["signature"] = {"inline": bundle("release")}
    ev = Evidence(signatures=(Document("spec.signature.inline", text=bundle("release")),), namespace_labels={})
    decision = decide(request(spec), policies(policy(registry={"required": True})), ev, FakeVerifier())
    assert not decision.allowed
    assert registry_reason(decision).startswith("spec.model.registry: missing, expected a registered model version")


@pytest.mark.parametrize(
    ("forbidden", "tags", "shown"),
    [
        ("quarantine", {"quarantine": "true"}, "'quarantine=true'"),
        ("stage=archived", {"stage": "archived"}, "'stage=archived'"),
    ],
)
def test_a_version_carrying_a_forbidden_tag_is_denied(forbidden: str, tags: dict[str, str], shown: str) -> None:
    version = found(tags={**found().tags, **tags})
    decision = decided(md_spec(), version, registry={"forbiddenTags": [forbidden]})
    assert not decision.allowed
    assert f"carries the tag {shown}, which policy prod forbids" in registry_reason(decision)


def test_a_forbidden_key_value_tag_lets_other_values_pass() -> None:
    version = found(tags={**found().tags, "stage": "production"})
    assert decided(md_spec(), version, registry={"forbiddenTags": ["stage=archived"]}).allowed


def test_a_failed_lookup_is_an_error_that_denies_and_names_the_registry() -> None:
    failed = RegistryVersion(
        registry=REGISTRY, name="iris", requested="alias champion", error="lookup timed out after 2s"
    )
    decision = decided(md_spec(), failed)
    assert not decision.allowed
    result = next(r for r in decision.results if r.gate == "registry")
    assert (result.outcome, result.reason) == (
        "error",
        f"{REGISTRY}: model 'iris' alias champion: lookup timed out after 2s",
    )


def test_no_configured_registry_denies_a_model_that_names_one() -> None:
    decision = decided(md_spec(), None)
    assert not decision.allowed
    assert "no MLflow registry is configured for devmlops" in registry_reason(decision)


def test_a_spec_model_version_that_disagrees_with_the_resolved_version_is_denied() -> None:
    spec = md_spec()
    spec["model"]["version"] = "2"
    decision = decided(spec, found())
    assert not decision.allowed
    assert "spec.model.version: got '2', expected '3'" in registry_reason(decision)


def test_models_without_a_registry_under_policies_without_registry_rules_get_no_registry_result() -> None:
    spec = md_spec()
    del spec["model"]["registry"]
    spec["signature"] = {"inline": "x"}
    ev = Evidence(signatures=(Document("spec.signature.inline", text=bundle("release")),), namespace_labels={})
    decision = decide(request(spec), policies(policy()), ev, FakeVerifier())
    assert decision.allowed
    assert not [r for r in decision.results if r.gate == "registry"]


@pytest.mark.parametrize(
    ("mlflow", "message"),
    [
        ({"name": "iris"}, "set exactly one of registry.mlflow.version or registry.mlflow.alias"),
        ({"name": "iris", "version": "3", "alias": "champion"}, "set exactly one of"),
        ({"name": "iris", "version": "03"}, "spec.model.registry.mlflow.version: found '03'"),
        ({"name": "iris", "alias": "cham pion"}, "spec.model.registry.mlflow.alias: found 'cham pion'"),
        ({"name": "iris", "version": 3}, "spec.model.registry.mlflow.version: found 3, expected a string"),
    ],
)
def test_a_malformed_registry_reference_is_an_error_naming_the_field(mlflow: dict[str, Any], message: str) -> None:
    obj = {"metadata": {"name": "m", "namespace": "n"}, "spec": md_spec()}
    obj["spec"]["model"]["registry"] = {"mlflow": mlflow}
    with pytest.raises(InvalidInputError) as caught:
        parse_model_deployment(obj)
    assert message in caught.value.user_message


def test_rego_sees_the_resolved_version_without_devmlops_own_tags() -> None:
    from devmlops.core.gates.rego import rego_input

    version = found(tags={**found().tags, "stage": "production"})
    compiled = policies(policy()).policies[0]
    document = rego_input(
        request(md_spec()), {"spec": md_spec()}, compiled, evidence_of(version), None, stage="admission"
    )
    assert document["registry"] == {
        "registry": REGISTRY,
        "name": "iris",
        "requested": "alias champion",
        "version": "3",
        "source": URI,
        "aliases": ["champion"],
        "tags": {"stage": "production"},
        "error": "",
    }
    assert rego_input(request(md_spec()), {}, compiled, Evidence(), None, stage="admission")["registry"] is None
