"""Hostile input never crashes devmlops and never admits: AdmissionReview bodies, OMS bundles, SBOMs, policies and
the Rego input. `make test` runs a short pass; `make fuzz` runs at least 100,000 cases and reports the count
(DEVMLOPS_FUZZ_EXAMPLES sets the examples per property)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.predicates import read_statement, validate_predicate
from devmlops.adapters.sbom import SbomError, parse_sbom
from devmlops.core.attestation import DEVMLOPS_PREDICATES
from devmlops.core.evidence import Evidence
from devmlops.core.gates.rego import rego_input
from devmlops.core.policy import Authority, PolicySet, compile_policy
from devmlops.core.ports import VerificationFailed
from devmlops.core.review import parse_review
from devmlops.errors import InvalidInputError
from devmlops.webhook import WebhookDeps, WebhookSettings, create_app
from devmlops.webhook.service import AdmissionService
from tests.support.evidence import attestation, predicate
from tests.support.lookups import EmptyCluster
from tests.support.models import make_key, make_model, sign_with_key

EXAMPLES = int(os.environ.get("DEVMLOPS_FUZZ_EXAMPLES", "150"))
CASES = {"count": 0}
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
KINDS = [
    {"group": "devmlops.io", "version": "v1alpha1", "kind": k}
    for k in ("ModelDeployment", "ClusterModelPolicy", "ModelPolicy", "ModelApproval")
] + [
    {"group": "serving.kserve.io", "version": "v1beta1", "kind": "InferenceService"},
    {"group": "apps", "version": "v1", "kind": "Deployment"},
    {"group": "", "version": "v1", "kind": "Pod"},
]


def reviews() -> st.SearchStrategy[dict[str, Any]]:
    request = st.fixed_dictionaries(
        {
            "uid": st.text(min_size=1, max_size=20),
            "kind": st.sampled_from(KINDS),
            "operation": st.sampled_from(["CREATE", "UPDATE", "CONNECT"]),
            "namespace": st.text(max_size=10),
            "name": st.text(max_size=10),
            "userInfo": st.fixed_dictionaries({"username": st.text(max_size=10)}),
            "object": st.dictionaries(st.sampled_from(["metadata", "spec", "status"]), json_values, max_size=3),
        }
    )
    return st.fixed_dictionaries(
        {"apiVersion": st.just("admission.k8s.io/v1"), "kind": st.just("AdmissionReview"), "request": request}
    )


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Authority]:
    folder = tmp_path_factory.mktemp("fuzz")
    key = make_key(folder)
    return sign_with_key(make_model(folder / "m"), key, folder / "model.sig"), Authority(
        name="k", kind="key", public_key=key.public_pem
    )


@pytest.fixture(scope="module")
def client(signed: tuple[str, Authority]) -> TestClient:
    policy = compile_policy(
        {
            "metadata": {"name": "p"},
            "spec": {"authorities": [{"name": "k", "key": {"publicKey": signed[1].public_key}}]},
        }
    )
    service = AdmissionService(policies=lambda: PolicySet((policy,)), lookup=EmptyCluster(), verifier=OmsVerifier())
    app = create_app(
        WebhookSettings(tls_cert=Path("x"), tls_key=Path("x"), max_body_bytes=65536),
        WebhookDeps(decide=service.decide, audit=lambda _r: None),
    )
    return TestClient(app)


def assert_denial_shape(body: Any) -> None:
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert isinstance(body["response"]["allowed"], bool)
    if not body["response"]["allowed"]:
        assert body["response"]["status"]["message"]


@FUZZ
@given(body=json_values)
def test_any_json_body_gets_a_well_formed_denial(client: TestClient, body: Any) -> None:
    CASES["count"] += 1
    response = client.post("/validate", content=json.dumps(body))
    assert response.status_code in (200, 400)
    answer = response.json()
    assert_denial_shape(answer)
    assert answer["response"]["allowed"] is False


@FUZZ
@given(raw=st.binary(max_size=300))
def test_any_bytes_get_a_well_formed_denial(client: TestClient, raw: bytes) -> None:
    CASES["count"] += 1
    response = client.post("/validate", content=raw)
    assert response.status_code in (200, 400)
    assert response.json()["response"]["allowed"] is False


@FUZZ
@given(review=reviews())
def test_random_reviews_of_every_kind_never_admit_a_model_without_evidence(
    client: TestClient, review: dict[str, Any]
) -> None:
    CASES["count"] += 1
    answer = client.post("/validate", json=review).json()
    assert_denial_shape(answer)
    assert answer["response"]["uid"] == review["request"]["uid"]
    if review["request"]["kind"]["kind"] in ("ModelDeployment", "InferenceService", "Pod", "ModelApproval"):
        assert answer["response"]["allowed"] is False


@FUZZ
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_a_bundle_changed_anywhere_fails_verification_cleanly(
    signed: tuple[str, Authority], position: int, flip: int
) -> None:
    CASES["count"] += 1
    bundle, authority = signed
    data = bytearray(bundle.encode())
    index = position % len(data)
    data[index] = (data[index] + flip) % 256
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    try:
        result = OmsVerifier().verify_model(text, authority)
    except VerificationFailed:
        return
    # Some bytes do not matter (JSON whitespace, a hint field): then the verified manifest must be the original one.
    assert result == OmsVerifier().verify_model(bundle, authority)


@FUZZ
@given(document=json_values)
def test_any_json_as_sbom_is_parsed_or_refused_with_an_sbom_error(document: Any) -> None:
    CASES["count"] += 1
    try:
        parse_sbom(json.dumps(document))
        message = "parsed"
    except SbomError as exc:
        message = exc.user_message
    assert message


@FUZZ
@given(
    spec=st.dictionaries(
        st.sampled_from(
            [
                "authorities",
                "threshold",
                "mode",
                "selector",
                "sbom",
                "allow",
                "compliance",
                "evidence",
                "rego",
                "onViolation",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_any_policy_spec_compiles_or_is_refused_naming_a_field(spec: dict[str, Any]) -> None:
    CASES["count"] += 1
    try:
        compile_policy({"metadata": {"name": "fuzz"}, "spec": spec})
        message = "ClusterModelPolicy fuzz compiled"
    except InvalidInputError as exc:
        message = exc.user_message
    assert message.startswith("ClusterModelPolicy fuzz")


@FUZZ
@given(review=reviews())
def test_the_rego_input_is_always_json(review: dict[str, Any]) -> None:
    CASES["count"] += 1
    try:
        request = parse_review(review)
    except InvalidInputError:
        return
    policy = compile_policy(
        {
            "metadata": {"name": "p"},
            "spec": {"authorities": [{"name": "k", "key": {"publicKey": "-----BEGIN PUBLIC KEY-----"}}]},
        }
    )
    obj = request.object or {}
    if not isinstance(obj.get("metadata") or {}, dict) or not isinstance(obj.get("spec") or {}, dict):
        return
    json.dumps(rego_input(request, obj, policy, Evidence(), None, stage="admission"))


predicate_types = st.sampled_from(
    [*DEVMLOPS_PREDICATES.values(), "https://devmlops.io/attestation/fairness/v2", "https://slsa.dev/provenance/v1"]
) | st.text(max_size=20)


def statements() -> st.SearchStrategy[Any]:
    """In-toto statements, mostly well shaped, with hostile subjects and predicates (and plain JSON now and then)."""
    subject = (
        st.fixed_dictionaries(
            {
                "name": st.text(max_size=10),
                "digest": st.fixed_dictionaries({"sha256": st.text("0123456789abcdefAB", max_size=66)}),
            }
        )
        | json_values
    )
    statement = st.fixed_dictionaries(
        {
            "_type": st.sampled_from(["https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"]),
            "subject": st.lists(subject, max_size=3) | json_values,
            "predicateType": predicate_types,
            "predicate": json_values,
        }
    )
    return statement | json_values


@FUZZ
@given(statement=statements())
def test_any_statement_is_read_or_refused_naming_a_field_never_crashes(statement: Any) -> None:
    CASES["count"] += 1
    try:
        read = read_statement(json.dumps(statement).encode())
    except VerificationFailed as exc:
        refused = exc.user_message
        assert refused
        return
    assert read.predicate_type == statement["predicateType"]
    assert all(digest.startswith("sha256:") and len(digest) == 71 for _name, digest in read.subjects)
    json.dumps(read.predicate)


@FUZZ
@given(kind=st.sampled_from(sorted(DEVMLOPS_PREDICATES)), field=st.text(max_size=12), value=json_values)
def test_a_devmlops_predicate_with_any_field_changed_is_read_or_refused(kind: str, field: str, value: Any) -> None:
    """Valid predicates with one top-level field replaced by anything: refused with the schema's reason, or valid."""
    CASES["count"] += 1
    body = {**predicate(kind), field: value}
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": "ab" * 32}}],
        "predicateType": DEVMLOPS_PREDICATES[kind],
        "predicate": body,
    }
    try:
        read_statement(json.dumps(statement).encode())
    except VerificationFailed as exc:
        refused = exc.user_message
        assert "predicate" in refused
        return
    validate_predicate(DEVMLOPS_PREDICATES[kind], body)


@pytest.fixture(scope="module")
def signed_attestation(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Authority]:
    key = make_key(tmp_path_factory.mktemp("attest"))
    bundle = attestation("fairness", predicate("fairness"), "sha256:" + "ab" * 32, key=key)
    return bundle, Authority(name="k", kind="key", public_key=key.public_pem)


@FUZZ
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_an_attestation_changed_anywhere_fails_verification_cleanly(
    signed_attestation: tuple[str, Authority], position: int, flip: int
) -> None:
    CASES["count"] += 1
    bundle, authority = signed_attestation
    data = bytearray(bundle.encode())
    index = position % len(data)
    data[index] = (data[index] + flip) % 256
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    try:
        result = OmsVerifier().verify_attestation(text, authority)
    except VerificationFailed:
        return
    assert result == OmsVerifier().verify_attestation(bundle, authority)


def test_report_the_number_of_fuzz_cases() -> None:
    """Last in the module: the count goes to stdout for `make fuzz`."""
    print(f"\nfuzz cases run: {CASES['count']}")
    assert CASES["count"] >= 7 * EXAMPLES * 0.5  # Hypothesis may stop early on exhausted small spaces
