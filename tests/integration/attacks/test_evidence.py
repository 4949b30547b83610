"""Evidence attestations attacked by a namespace editor (mallory), through the real API server, webhook and OPA.

The policy requires a fairness attestation and a scan attestation, signed by the evaluators' key (which mallory
does not hold), at most 30 days old, judged in Rego (policies/evidence). Mallory can write ModelDeployments and
ConfigMaps, read everything, and collect every attestation ever published (of this model, of others, old ones).
Everything the gate judges is inside the signed statement, so what mallory can do is carry bundles around: each
attempt below is denied with a reason that names the requirement, the attestation, what was found and what was
expected.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.oms import OmsVerifier
from devmlops.core.policy import Authority
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import admitted, denied
from tests.integration.attacks.conftest import create_model_deployment as create
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    child_exists,
    cluster_policy,
    eventually,
    evidence_config_map,
    from_config_map,
    installed_policy,
    md_status,
    model_deployment,
    signed_model,
)
from tests.support.evidence import attestation, now_rfc3339, predicate
from tests.support.models import KeyFiles, make_key, make_model, sign_with_key

FAIRNESS = {"sensitiveFeatures": ["sex"], "maxDemographicParityDifference": 0.1, "maxEqualizedOddsDifference": 0.2}
SCAN = {"allowedGlobalPrefixes": ["sklearn.", "numpy."]}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyFiles]:
    folder = tmp_path_factory.mktemp("evidence-keys")
    return {"evaluators": make_key(folder, "evaluators"), "mallory": make_key(folder, "mallory")}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("evidence-model"), "fraud")


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    """Another model: other bytes, so another digest (signed_model's default files would give the same one)."""
    folder = tmp_path_factory.mktemp("evidence-other")
    make_model(folder / "churn", {"weights.bin": b"churn" * 300, "config.json": b'{"layers": 3}'})
    key = make_key(folder, "churn")
    bundle = sign_with_key(folder / "churn", key, folder / "churn.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key.public_pem)).digest
    return SignedModel(key, bundle, digest, "", "")


@pytest.fixture
def policy(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, model: SignedModel, keys: dict[str, KeyFiles]
) -> Iterator[str]:
    ns = enforced_namespace
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        ns, evidence_config_map("evidence", ns, {"model.sig": model.bundle})
    )
    evaluators = [{"name": "evaluators", "key": {"publicKey": keys["evaluators"].public_pem}}]
    evidence = [
        {
            "name": "fairness",
            "predicateType": "fairness",
            "authorities": evaluators,
            "maxAge": "30d",
            "conditions": {"package": "devmlops.evidence", "parameters": FAIRNESS},
        },
        {
            "name": "scan",
            "predicateType": "scan",
            "authorities": evaluators,
            "conditions": {"package": "devmlops.evidence", "parameters": SCAN},
        },
    ]
    name = f"evidence-{ns}"[:63]
    with installed_policy(admin, stack, cluster_policy(name, ns, model.key.public_pem, evidence=evidence)):
        yield name


def signed(kind: str, digest: str, key: KeyFiles, **changes: Any) -> str:
    return attestation(kind, predicate(kind, **changes), digest, key=key)


def deployment(
    model: SignedModel, *bundles: str, name: str = "fraud", refs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    sources = [{"inline": b} for b in bundles] + (refs or [])
    return model_deployment(
        name, model.digest, signature=from_config_map("evidence", "model.sig"), attestations=sources
    )


def good(model: SignedModel, keys: dict[str, KeyFiles]) -> list[str]:
    return [signed("fairness", model.digest, keys["evaluators"]), signed("scan", model.digest, keys["evaluators"])]


def test_a_model_with_its_signed_evidence_is_admitted_and_served(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    policy: str,
    model: SignedModel,
    keys: dict[str, KeyFiles],
) -> None:
    """The positive control: the same editor, honest evidence. The operator decides again (with its own clock for
    the evidence's age) and renders the InferenceService, which the webhook decides at the serving stage."""
    admitted(create, mallory, enforced_namespace, deployment(model, *good(model, keys)))
    eventually(lambda: child_exists(admin, enforced_namespace, "fraud"), what="the InferenceService of fraud")
    status = eventually(lambda: md_status(admin, enforced_namespace).get("child"), what="status.child")
    assert status["kind"] == "InferenceService"


def test_a_model_without_evidence_is_denied_naming_each_requirement(
    mallory: k8s.ApiClient, enforced_namespace: str, policy: str, model: SignedModel
) -> None:
    message = denied(create, mallory, enforced_namespace, deployment(model))
    assert (
        f"evidence gate (policy {policy}): evidence 'fairness' (https://devmlops.io/attestation/fairness/v1, "
        in message
    )
    assert (
        "signed by evaluators, at most 30d old): no attestation satisfies it: spec.attestations lists none" in message
    )


@pytest.mark.parametrize(
    ("mangle", "complaint"),
    [
        (lambda b: b[: len(b) // 2], "not verified (evaluators: signature bundle is not valid JSON"),
        (
            lambda b: json.dumps({**json.loads(b), "dsseEnvelope": None}),
            "dsseEnvelope: got NoneType, expected an object",
        ),
        (lambda b: "{}", "signature bundle has no verificationMaterial: expected a Sigstore bundle"),
    ],
    ids=["truncated", "no-envelope", "empty"],
)
def test_a_malformed_attestation_is_denied_naming_what_is_wrong(
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    policy: str,
    model: SignedModel,
    keys: dict[str, KeyFiles],
    mangle: Any,
    complaint: str,
) -> None:
    fairness, scan = good(model, keys)
    message = denied(create, mallory, enforced_namespace, deployment(model, mangle(fairness), scan))
    assert "evidence 'fairness'" in message
    assert f"spec.attestations[0]: {complaint}" in message or complaint in message


def test_a_genuine_but_expired_attestation_is_denied_as_expired(
    mallory: k8s.ApiClient, enforced_namespace: str, policy: str, model: SignedModel, keys: dict[str, KeyFiles]
) -> None:
    """Mallory kept last quarter's attestation (the model was fair then); the policy wants one from this month."""
    old = now_rfc3339(-dt.timedelta(days=90))
    stale = signed("fairness", model.digest, keys["evaluators"], timestamp=old)
    message = denied(create, mallory, enforced_namespace, deployment(model, stale, good(model, keys)[1]))
    assert f"spec.attestations[0]: expired: made {old}, 90d0h old, expected at most 30d" in message


def test_a_genuine_attestation_of_another_model_is_denied_as_the_wrong_subject(
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    policy: str,
    model: SignedModel,
    other_model: SignedModel,
    keys: dict[str, KeyFiles],
) -> None:
    """The churn model passed its fairness test; mallory attaches that attestation to the fraud model."""
    assert other_model.digest != model.digest
    borrowed = signed("fairness", other_model.digest, keys["evaluators"])
    message = denied(create, mallory, enforced_namespace, deployment(model, borrowed, good(model, keys)[1]))
    assert (
        f"spec.attestations[0]: wrong subject: it is about {other_model.digest[:19]}..., expected spec.model.digest "
        in (message)
    )


def test_an_attestation_mallory_signed_herself_is_denied_naming_the_trusted_signer(
    mallory: k8s.ApiClient, enforced_namespace: str, policy: str, model: SignedModel, keys: dict[str, KeyFiles]
) -> None:
    forged = signed("fairness", model.digest, keys["mallory"])
    message = denied(create, mallory, enforced_namespace, deployment(model, forged, good(model, keys)[1]))
    assert "spec.attestations[0]: not verified (evaluators: signature rejected: Key mismatch" in message


def test_a_payload_changed_under_a_genuine_signature_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, policy: str, model: SignedModel, keys: dict[str, KeyFiles]
) -> None:
    """An unfair model's genuine attestation with the parity difference rewritten to 0.01 (and the envelope's signature
    kept): the signature no longer covers the payload."""
    document = json.loads(signed("fairness", model.digest, keys["evaluators"]))
    statement = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    statement["predicate"]["sensitiveFeatures"][0]["demographicParityDifference"] = 0.01
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    message = denied(create, mallory, enforced_namespace, deployment(model, json.dumps(document), good(model, keys)[1]))
    assert "spec.attestations[0]: not verified (evaluators: signature rejected" in message


def test_replaying_other_signed_documents_as_fairness_evidence_is_denied_by_predicate_type(
    mallory: k8s.ApiClient, enforced_namespace: str, policy: str, model: SignedModel, keys: dict[str, KeyFiles]
) -> None:
    """The model's own OMS signature (signed by a trusted key, about this digest) and a genuine scan attestation are
    statements too, but not about fairness."""
    scan = good(model, keys)[1]
    message = denied(create, mallory, enforced_namespace, deployment(model, model.bundle, scan))
    assert "evidence 'fairness'" in message
    assert "spec.attestations[0]: not verified (evaluators: signature rejected" in message
    assert "spec.attestations[1]: predicateType https://devmlops.io/attestation/scan/v1" in message


def test_a_failing_fairness_figure_is_denied_with_the_value_and_the_threshold(
    mallory: k8s.ApiClient, enforced_namespace: str, policy: str, model: SignedModel, keys: dict[str, KeyFiles]
) -> None:
    unfair = predicate("fairness")
    unfair["sensitiveFeatures"][0]["demographicParityDifference"] = 0.693
    bundle = attestation("fairness", unfair, model.digest, key=keys["evaluators"])
    message = denied(create, mallory, enforced_namespace, deployment(model, bundle, good(model, keys)[1]))
    assert "evidence 'fairness': spec.attestations[0], signed by key sha256:" in message
    assert "demographic parity difference for 'sex': found 0.693, expected at most 0.1" in message


def test_an_unsafe_scan_is_denied_naming_the_file_and_what_it_imports(
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    policy: str,
    model: SignedModel,
    keys: dict[str, KeyFiles],
    tmp_path: Path,
) -> None:
    from devmlops.adapters.scan import scan_model
    from tests.support.evidence import malicious_files

    scanned = scan_model(malicious_files(tmp_path / "bad")["os_system"]).predicate()
    bundle = attestation("scan", scanned, model.digest, key=keys["evaluators"])
    message = denied(create, mallory, enforced_namespace, deployment(model, good(model, keys)[0], bundle))
    assert "evidence 'scan': spec.attestations[1], signed by key sha256:" in message
    assert "unsafe files: found 1 (os_system.pkl (posix.system)), expected at most 0" in message


def test_evidence_from_a_labelled_config_map_counts_and_swapping_it_later_is_decided_again(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    policy: str,
    model: SignedModel,
    keys: dict[str, KeyFiles],
) -> None:
    """Attestations by reference, as signatures are; an update that swaps in a bad one is decided like a create."""
    ns = enforced_namespace
    fairness, scan = good(model, keys)
    unfair_body = predicate("fairness")
    unfair_body["sensitiveFeatures"][0]["demographicParityDifference"] = 0.5
    unfair = attestation("fairness", unfair_body, model.digest, key=keys["evaluators"])
    data = {"fairness.att.json": fairness, "scan.att.json": scan, "unfair.att.json": unfair}
    k8s.CoreV1Api(mallory).create_namespaced_config_map(ns, evidence_config_map("attestations", ns, data))
    refs = [from_config_map("attestations", "fairness.att.json"), from_config_map("attestations", "scan.att.json")]
    admitted(create, mallory, ns, deployment(model, refs=refs))
    swapped = {"spec": {"attestations": [from_config_map("attestations", "unfair.att.json"), refs[1]]}}
    api = k8s.CustomObjectsApi(mallory)
    message = denied(api.patch_namespaced_custom_object, GROUP, VERSION, ns, "modeldeployments", "fraud", swapped)
    assert "evidence 'fairness': spec.attestations[0] (ConfigMap " in message
    assert "found 0.5, expected at most 0.1" in message
