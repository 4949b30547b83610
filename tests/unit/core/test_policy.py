from __future__ import annotations

from typing import Any

import pytest

from devmlops.core.globs import glob_matches
from devmlops.core.policy import LabelSelector, compile_policy
from devmlops.errors import InvalidInputError

PEM = "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----"


def cmp(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"authorities": [{"name": "k", "key": {"publicKey": PEM}}]}
    base.update(spec)
    return {"metadata": {"name": "p", "resourceVersion": "3"}, "spec": base}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"authorities": []}, "spec.authorities: found an empty list, expected at least 1 item(s)"),
        ({"authorities": [{"name": "k"}]}, "spec.authorities[0]: set exactly one of key, certificateChain or keyless"),
        ({"authorities": [{"name": "k", "key": {"publicKey": "nope"}}]}, "spec.authorities[0].key.publicKey"),
        (
            {"authorities": [{"name": "k", "keyless": {"identityRegExp": "(", "issuer": "i"}}]},
            "identityRegExp: not a valid",
        ),
        (
            {"authorities": [{"name": "k", "keyless": {"identity": "a", "issuer": "i", "trustConfig": "{"}}]},
            "trustConfig",
        ),
        ({"threshold": 2}, "spec.threshold: got 2, expected 1 to 1"),
        ({"mode": "audit"}, "spec.mode: found 'audit', expected 'enforce' or 'warn'"),
        ({"selector": {"models": "fraud-*"}}, "spec.selector.models: found 'fraud-*', expected a list"),
        ({"selector": "all"}, "spec.selector: found 'all', expected an object"),
        ({"sbom": {"required": "false"}}, "spec.sbom.required: found 'false', expected true or false"),
        ({"onViolation": "scaletozero"}, "spec.onViolation: found 'scaletozero', expected 'degrade' or 'scaleToZero'"),
        ({"onViolaton": "scaleToZero"}, "spec.onViolaton: unknown field (check its spelling)"),
        ({"threshold": "2"}, "spec.threshold: found '2', expected an integer"),
        ({"authorities": [{"name": "k", "key": "PEM"}]}, "spec.authorities[0].key: found 'PEM', expected an object"),
        (
            {"selector": {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}},
            "needs at least one value",
        ),
        (
            {"authorities": [{"name": "k", "key": {"publicKey": PEM}}, {"name": "k", "key": {"publicKey": PEM}}]},
            "names must be unique",
        ),
    ],
)
def test_a_policy_that_cannot_work_is_rejected_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        compile_policy(cmp(**spec))
    assert field in caught.value.user_message
    assert caught.value.user_message.startswith("ClusterModelPolicy p")


def test_a_compiled_policy_carries_its_revision_and_defaults() -> None:
    policy = compile_policy(cmp())
    assert (policy.name, policy.revision, policy.mode, policy.threshold) == ("p", "3", "enforce", 1)
    assert policy.sbom.required is False
    assert policy.allow.storage_uris is None
    assert policy.allow.s3_endpoints == ()  # absent: no S3 endpoint but the AWS default (core/storageinit.py)
    allowing = compile_policy(cmp(allow={"s3Endpoints": ["minio.models.svc:9000"]}))
    assert allowing.allow.s3_endpoints == ("minio.models.svc:9000",)


def test_keyless_authorities_report_their_trust_root_version() -> None:
    keyless = compile_policy(cmp(authorities=[{"name": "ci", "keyless": {"identity": "a", "issuer": "i"}}]))
    assert keyless.authorities[0].trust_root_version == "public-good"
    custom = compile_policy(
        cmp(authorities=[{"name": "ci", "keyless": {"identity": "a", "issuer": "i", "trustConfig": "{}"}}])
    )
    assert custom.authorities[0].trust_root_version.startswith("config:")


def test_label_selectors_follow_kubernetes_semantics() -> None:
    selector = LabelSelector({"team": "a"}, (("env", "In", ("prod",)), ("legacy", "DoesNotExist", ())))
    assert selector.matches({"team": "a", "env": "prod"})
    assert not selector.matches({"team": "a", "env": "dev"})
    assert not selector.matches({"team": "a", "env": "prod", "legacy": "1"})
    assert LabelSelector({}, (("env", "NotIn", ("prod",)),)).matches({})


@pytest.mark.parametrize(
    ("glob", "value", "matches"),
    [
        ("s3://models/*", "s3://models/fraud", True),
        ("s3://models/*", "s3://models/fraud/v1", False),
        ("s3://models/**", "s3://models/fraud/v1", True),
        ("fraud-?", "fraud-a", True),
        ("hf://org/[x]", "hf://org/[x]", True),
        ("s3://models.prod/*", "s3://modelsXprod/a", False),
    ],
)
def test_globs_keep_single_stars_within_a_segment(glob: str, value: str, matches: bool) -> None:
    assert glob_matches(glob, value) is matches
