"""decide() and the signature, sbom and allow-list gates, with the verifier port faked."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest

from devmlops.core.decision import decide
from devmlops.core.evidence import Document, Evidence
from devmlops.core.policy import PolicySet, compile_policy
from devmlops.core.ports import RegoVerdict
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.core.sbom import SbomComponent, SbomSummary
from tests.unit.core.fakes import DIGEST, FILE_DIGEST, FakeVerifier, bundle

MD = GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment")
PEM = "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----"


def policy(name: str = "prod", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"authorities": [{"name": "release", "key": {"publicKey": PEM}}]}
    base.update(spec)
    return {"metadata": {"name": name, "resourceVersion": "7"}, "spec": base}


def policies(*objs: dict[str, Any], no_match: str = "deny") -> PolicySet:
    return PolicySet(tuple(compile_policy(o) for o in objs), no_match=no_match)  # type: ignore[arg-type]


def request(spec: dict[str, Any], *, operation: str = "CREATE", old: dict[str, Any] | None = None) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        kind=MD,
        operation=operation,
        namespace="team-a",
        name="fraud",
        username="alice",
        groups=(),  # type: ignore[arg-type]
        object={"spec": spec},
        old_object={"spec": old} if old else None,
    )


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "fraud", "uri": "s3://models-prod/fraud/1", "format": "sklearn", "digest": DIGEST},
        "runtime": {"kind": "kserve"},
        "signature": {"inline": "x"},
    }
    base.update(overrides)
    return base


def evidence(*bundles: str, labels: dict[str, str] | None = None, **kw: Any) -> Evidence:
    return Evidence(
        signatures=tuple(Document("spec.signature.inline", text=b) for b in bundles),
        namespace_labels=labels or {"team": "a"},
        **kw,
    )


def run(spec_: dict[str, Any], pset: PolicySet, ev: Evidence, verifier: FakeVerifier | None = None) -> Any:
    return decide(request(spec_), pset, ev, verifier or FakeVerifier())


# -- signature -------------------------------------------------------------------------------------------


def test_a_model_signed_by_a_trusted_authority_for_its_digest_is_admitted() -> None:
    decision = run(spec(), policies(policy()), evidence(bundle("release")))
    assert decision.allowed, decision.message
    signature = decision.results[0]
    assert (signature.gate, signature.outcome, signature.policy) == ("signature", "pass", "prod")
    assert "verified for release" in signature.reason


def test_a_signature_by_an_untrusted_signer_is_denied_naming_who_was_expected() -> None:
    decision = run(spec(), policies(policy()), evidence(bundle("mallory")))
    assert not decision.allowed
    assert decision.message.startswith("denied by devmlops: signature gate (policy prod): got 0 verified authorities")
    assert "expected one of: release (EC public key)" in decision.message


def test_a_digest_the_signature_does_not_cover_is_denied_with_both_digests() -> None:
    other = "sha256:" + "ef" * 32
    decision = run(spec(model={**spec()["model"], "digest": other}), policies(policy()), evidence(bundle("release")))
    assert not decision.allowed
    assert f"spec.model.digest: got {other[:19]}..., but bundle 0 verified for release but signs {DIGEST[:19]}..." in (
        decision.message
    )


def test_k_of_n_needs_distinct_authorities() -> None:
    two = policy(
        authorities=[{"name": "release", "key": {"publicKey": PEM}}, {"name": "security", "key": {"publicKey": PEM}}],
        threshold=2,
    )
    assert not run(spec(), policies(two), evidence(bundle("release"), bundle("release"))).allowed
    assert run(spec(), policies(two), evidence(bundle("release"), bundle("security"))).allowed


def test_a_missing_signature_and_an_unresolved_reference_are_denied() -> None:
    assert "spec.signature is missing" in run(spec(), policies(policy()), evidence()).message
    unresolved = Evidence(signatures=(Document("ConfigMap a/b key 'k'", error="ConfigMap a/b not found"),))
    assert "signature bundle not found: ConfigMap a/b not found" in run(spec(), policies(policy()), unresolved).message


def test_a_verification_timeout_is_an_error_that_denies_and_is_never_a_pass() -> None:
    decision = run(spec(), policies(policy()), evidence(bundle("release")), FakeVerifier(unavailable=True))
    assert not decision.allowed
    assert decision.results[0].outcome == "error"
    assert "timed out" in decision.message


# -- policy matching -------------------------------------------------------------------------------------


def test_no_matching_policy_denies_by_default_and_follows_the_configured_action() -> None:
    narrow = policy(selector={"models": ["churn-*"]})
    denied = run(spec(), policies(narrow), evidence(bundle("release")))
    assert not denied.allowed
    assert "no ClusterModelPolicy selects model 'fraud' in namespace 'team-a'" in denied.message
    warned = run(spec(), policies(narrow, no_match="warn"), evidence(bundle("release")))
    assert warned.allowed
    assert warned.warnings
    assert run(spec(), policies(narrow, no_match="allow"), evidence(bundle("release"))).allowed


def test_policies_select_by_namespace_labels_and_model_globs_and_all_must_pass() -> None:
    team_a = policy("team-a", selector={"namespaceSelector": {"matchLabels": {"team": "a"}}})
    strict = policy("strict", selector={"models": ["fraud*"]}, allow={"storageUris": ["gs://**"]})
    team_b = policy("team-b", selector={"namespaceSelector": {"matchLabels": {"team": "b"}}})
    decision = run(spec(), policies(team_a, strict, team_b), evidence(bundle("release")))
    assert {r.policy for r in decision.results} == {"team-a", "strict"}
    assert not decision.allowed
    assert "allowlist gate (policy strict): spec.model.uri: got 's3://models-prod/fraud/1'" in decision.message


def test_warn_mode_admits_and_returns_every_failure_as_a_warning() -> None:
    decision = run(spec(), policies(policy(mode="warn")), evidence(bundle("mallory")))
    assert decision.allowed
    assert decision.warnings[0].startswith("signature gate (policy prod): got 0 verified authorities")


def test_a_policy_that_does_not_compile_fails_closed() -> None:
    broken = PolicySet(policies=(compile_policy(policy()),), broken={"typo": "spec.threshold: got 5"})
    decision = run(spec(), broken, evidence(bundle("release")))
    assert not decision.allowed
    assert "policy gate (policy typo): policy cannot be compiled: spec.threshold: got 5" in decision.message


def test_a_broken_team_policy_fails_closed_in_its_own_namespace_only() -> None:
    elsewhere = PolicySet(policies=(compile_policy(policy()),), broken={"team-b/narrow": "spec.allow: got 5"})
    assert run(spec(), elsewhere, evidence(bundle("release"))).allowed
    here = PolicySet(policies=(compile_policy(policy()),), broken={"team-a/narrow": "spec.allow: got 5"})
    decision = run(spec(), here, evidence(bundle("release")))
    assert not decision.allowed
    assert "policy gate (policy team-a/narrow): policy cannot be compiled" in decision.message


# -- allow-list -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "overrides", "complaint"),
    [
        ({"storageUris": ["s3://models-prod/*"]}, {}, "spec.model.uri"),  # * stays within one segment
        ({"runtimes": ["triton"]}, {}, "spec.runtime.kind: got 'kserve'"),
        ({"formats": ["onnx"]}, {}, "spec.model.format: got 'sklearn'"),
        ({}, {"runtime": {"kind": "triton", "image": "nvcr.io/nvidia/tritonserver:24.01"}}, "pinned by digest"),
        ({"images": ["nvcr.io/nvidia/**"]}, {"runtime": {"kind": "kserve", "image": "docker.io/evil/server"}}, "image"),
    ],
)
def test_the_allow_list_denies_what_it_does_not_name(
    allow: dict[str, Any], overrides: dict[str, Any], complaint: str
) -> None:
    decision = run(spec(**overrides), policies(policy(allow=allow)), evidence(bundle("release")))
    assert not decision.allowed
    assert complaint in decision.message


def test_double_star_globs_cross_path_segments() -> None:
    allowed = policy(allow={"storageUris": ["s3://models-prod/**"], "runtimes": ["kserve"], "formats": ["sklearn"]})
    assert run(spec(), policies(allowed), evidence(bundle("release"))).allowed


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example.com/prod/../staging/fraud.tgz",
        "https://models.example.com/prod/./../staging/fraud.tgz",
        "https://models.example.com/prod/%2e%2E/staging/fraud.tgz",
        "https://models.example.com/prod/.%2e",
        "https://models.example.com/prod/..?x=1",
        "https://models.example.com/prod/..%2Fstaging/fraud.tgz",
        "https://models.example.com/prod\\..\\staging/fraud.tgz",
        "s3://models-prod/fraud/../../other-bucket/fraud",
    ],
)
def test_a_dot_segment_walks_out_of_no_allowed_storage_location(uri: str) -> None:
    """Bytes attack review: the glob matched the URI as written, its client fetched it with the dot segments removed
    (``tests/integration/attacks/test_storage_uris.py``)."""
    allow = {"storageUris": ["https://models.example.com/prod/**", "s3://models-prod/**"]}
    model = {"name": "fraud", "uri": uri, "format": "sklearn", "digest": DIGEST}
    decision = run(spec(model=model), policies(policy(allow=allow)), evidence(bundle("release")))
    assert not decision.allowed
    assert f"spec.model.uri: got '{uri}', expected a URI without '.' or '..' segments" in decision.message
    plain = {**model, "uri": "https://models.example.com/prod/fraud..v2/model.tgz"}  # dots inside a name are fine
    assert run(spec(model=plain), policies(policy(allow=allow)), evidence(bundle("release"))).allowed


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example.com/prod/..;/staging/fraud.tgz",
        "https://models.example.com/prod/..;jsessionid=1/staging/fraud.tgz",
        "https://models.example.com/prod/%2E%2e;/staging/fraud.tgz",
        "https://models.example.com/prod/..%3B/staging/fraud.tgz",
        "https://models.example.com/prod/x/.;/..;/..;/staging/fraud.tgz",
    ],
)
def test_a_path_parameter_after_a_dot_segment_walks_out_of_no_allowed_storage_location(uri: str) -> None:
    """Second attack round: Tomcat (and Spring and Jetty behind it) take a segment's ``;`` parameters off before
    resolving it, so ``..;`` is ``..`` there (``tests/integration/attacks/test_storage_uris.py``)."""
    allow = {"storageUris": ["https://models.example.com/prod/**"]}
    model = {"name": "fraud", "uri": uri, "format": "sklearn", "digest": DIGEST}
    decision = run(spec(model=model), policies(policy(allow=allow)), evidence(bundle("release")))
    assert not decision.allowed
    assert f"spec.model.uri: got '{uri}', expected a URI without '.' or '..' segments" in decision.message
    for plain in ("https://models.example.com/prod/fraud;v=2/model.tgz", "https://models.example.com/prod/..v2;x/m"):
        assert run(
            spec(model={**model, "uri": plain}), policies(policy(allow=allow)), evidence(bundle("release"))
        ).allowed


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example.com/prod/$(DEVMLOPS_REGISTRY_AUTH)",
        "https://models.example.com/prod/x/$(FRAUD_SERVICE_HOST)/fraud.tgz",
        "https://models.example.com/prod/$$(DEVMLOPS_REGISTRY_AUTH)",
        "s3://models-prod/fraud$$/model",
        "https://models.example.com/prod/$(S3_ENDPOINT)/fraud.tgz",  # the KServe review's forms
        "https://models.example.com/prod/$$(HOME)/fraud.tgz",
        "s3://models-prod/$(AWS_CA_BUNDLE)",
    ],
)
def test_a_variable_reference_walks_out_of_no_allowed_storage_location(uri: str) -> None:
    """Pods review: the URI is an argument of the storage initializer's container, where the kubelet expands
    ``$(NAME)`` from its environment (a Secret the namespace's editors write among it) and ``$$`` to ``$``
    (``tests/integration/attacks/test_storage_uris.py``)."""
    allow = {"storageUris": ["https://models.example.com/prod/**", "s3://models-prod/**"]}
    model = {"name": "fraud", "uri": uri, "format": "sklearn", "digest": DIGEST}
    decision = run(spec(model=model), policies(policy(allow=allow)), evidence(bundle("release")))
    assert not decision.allowed
    assert f"spec.model.uri: got '{uri}', expected a URI without '$(' or '$$'" in decision.message
    plain = {**model, "uri": "https://models.example.com/prod/fraud$v2/%24(model).tgz"}  # a lone or encoded "$" is
    assert run(spec(model=plain), policies(policy(allow=allow)), evidence(bundle("release"))).allowed  # kept as is
    unlisted = policy(allow={"runtimes": ["kserve"]})  # without an allow-list of sources nothing is walked out of
    assert run(spec(model=model), policies(unlisted), evidence(bundle("release"))).allowed


@pytest.mark.parametrize(
    "uri",
    [
        "https://evil.example?.models.example.com/fraud.tgz",
        "https://evil.example#.models.example.com/fraud.tgz",
        "https://evil.example:443?.models.example.com/fraud.tgz",
        "https://x@evil.example?.models.example.com/fraud.tgz",
    ],
)
def test_a_host_that_ends_early_matches_no_glob_over_hosts(uri: str) -> None:
    """Gates review: ``*`` spanned the ``?`` or ``#`` where every client ends the host, so the regional glob matched
    and the client would have fetched from evil.example (``tests/integration/attacks/test_storage_uris.py``)."""
    assert urlsplit(uri).hostname == "evil.example"  # what a client fetches from
    allow = {"storageUris": ["https://*.models.example.com/**"]}
    model = {"name": "fraud", "uri": uri, "format": "sklearn", "digest": DIGEST}
    decision = run(spec(model=model), policies(policy(allow=allow)), evidence(bundle("release")))
    assert not decision.allowed
    assert f"spec.model.uri: got '{uri}', expected a URI whose host part has no '?', '#' or '@'" in decision.message
    regional = {**model, "uri": "https://eu.models.example.com/fraud.tgz?version=2#latest"}  # after the host: fine
    assert run(spec(model=regional), policies(policy(allow=allow)), evidence(bundle("release"))).allowed
    pinned = {**model, "uri": "oci://eu.models.example.com/fraud@" + DIGEST}  # an OCI digest is after the host
    oci = policies(policy(allow={"storageUris": ["oci://*.models.example.com/**"]}))
    assert "allowlist" not in {
        r.gate for r in run(spec(model=pinned), oci, evidence(bundle("release"))).results if r.outcome == "fail"
    }


def test_an_empty_allow_list_allows_nothing() -> None:
    assert not run(spec(), policies(policy(allow={"storageUris": []})), evidence(bundle("release"))).allowed


# -- sbom -------------------------------------------------------------------------------------------------


def summary(*components: SbomComponent, fmt: str = "cyclonedx") -> SbomSummary:
    return SbomSummary(format=fmt, spec_version="1.6", components=components)  # type: ignore[arg-type]


def model_component(**kw: Any) -> SbomComponent:
    defaults: dict[str, Any] = {"name": "fraud", "kind": "machine-learning-model", "hashes": (("sha256", DIGEST[7:]),)}
    defaults.update(kw)
    return SbomComponent(**defaults)


def sbom_evidence(sbom_summary: SbomSummary | None, error: str = "", **kw: Any) -> Evidence:
    return evidence(
        bundle("release"),
        sbom=Document("spec.sbom.document.inline", text="{}"),
        sbom_summary=sbom_summary,
        sbom_error=error,
        **kw,
    )


def sbom_policy(**sbom: Any) -> PolicySet:
    return policies(policy(sbom={"required": True, **sbom}))


def test_an_sbom_whose_model_component_carries_the_signed_digest_binds() -> None:
    decision = run(spec(), sbom_policy(), sbom_evidence(summary(model_component())))
    assert decision.allowed, decision.message
    assert next(r for r in decision.results if r.gate == "sbom").reason == "cyclonedx 1.6 SBOM valid (fraud)"


def test_a_file_digest_from_the_manifest_also_binds() -> None:
    component = model_component(hashes=(("sha256", FILE_DIGEST[7:]),))
    assert run(spec(), sbom_policy(), sbom_evidence(summary(component))).allowed


def test_an_sbom_for_other_weights_is_denied_and_name_binding_needs_the_policys_consent() -> None:
    other = model_component(hashes=(("sha256", "00" * 32),))
    decision = run(spec(), sbom_policy(), sbom_evidence(summary(other)))
    assert not decision.allowed
    assert "SBOM binding: got model component(s) fraud" in decision.message
    nameless = model_component(hashes=())
    assert not run(spec(), sbom_policy(), sbom_evidence(summary(nameless))).allowed
    assert run(spec(), sbom_policy(allowNameBinding=True), sbom_evidence(summary(nameless))).allowed


def test_a_required_sbom_that_is_missing_or_invalid_is_denied() -> None:
    assert "spec.sbom is missing" in run(spec(), sbom_policy(), evidence(bundle("release"))).message
    invalid = run(spec(), sbom_policy(), sbom_evidence(None, error="components[0].hashes[0].content: 'x' is bad"))
    assert "SBOM invalid: components[0].hashes[0].content" in invalid.message


def test_an_sbom_is_optional_when_the_policy_says_nothing_about_it() -> None:
    decision = run(spec(), policies(policy()), evidence(bundle("release")))
    assert next(r for r in decision.results if r.gate == "sbom").outcome == "skip"


def test_denied_licenses_are_found_inside_license_expressions() -> None:
    licensed = model_component(licenses=("Apache-2.0 OR (AGPL-3.0-only WITH Classpath-exception-2.0)",))
    decision = run(spec(), sbom_policy(deniedLicenses=["agpl-3.0-only"]), sbom_evidence(summary(licensed)))
    assert not decision.allowed
    assert "which the policy denies (AGPL-3.0-ONLY)" in decision.message


def test_required_model_card_fields_must_be_present() -> None:
    partial = model_component(model_card_fields=frozenset({"modelParameters", "modelParameters.task"}))
    decision = run(
        spec(),
        sbom_policy(requiredModelCardFields=["modelParameters.task", "considerations.ethicalConsiderations"]),
        sbom_evidence(summary(partial)),
    )
    assert not decision.allowed
    assert "missing considerations.ethicalConsiderations" in decision.message


def test_an_sbom_format_the_policy_does_not_accept_is_denied() -> None:
    decision = run(spec(), sbom_policy(formats=["spdx"]), sbom_evidence(summary(model_component())))
    assert "SBOM format: got cyclonedx, expected one of spdx" in decision.message


def test_spdx_2_documents_bind_through_any_component_because_spdx_2_has_no_ai_profile() -> None:
    file = SbomComponent(name="weights.bin", kind="file", hashes=(("sha256", FILE_DIGEST[7:]),))
    assert run(spec(), sbom_policy(), sbom_evidence(summary(file, fmt="spdx"))).allowed


class RecordingEngine:
    """An OPA that denies nothing and keeps the input documents it was given."""

    def __init__(self) -> None:
        self.inputs: list[Mapping[str, Any]] = []

    def evaluate(self, package: str, document: Mapping[str, Any]) -> RegoVerdict:
        self.inputs.append(document)
        return RegoVerdict()


@pytest.mark.parametrize("kind", ["package", "file"])
def test_rego_sees_the_spdx_2_components_the_sbom_gate_binds_as_the_model(kind: str) -> None:
    """SPDX 2 has no AI profile, so the sbom gate binds the model through any package or file: the Rego input lists
    the same ones as sbom.models, licenses included (before: none, so a license rule in Rego never saw the SPDX 2
    package the gate had bound, and admitted its denied license)."""
    package = SbomComponent(name="fraud", kind=kind, hashes=(("sha256", DIGEST[7:]),), licenses=("AGPL-3.0-only",))
    engine = RecordingEngine()
    pset = policies(policy(sbom={"required": True}, rego={"packages": ["devmlops.licenses"]}))
    decision = decide(request(spec()), pset, sbom_evidence(summary(package, fmt="spdx")), FakeVerifier(), engine)
    assert decision.allowed, decision.message  # the recording engine denies nothing; the gate bound the package
    (document,) = engine.inputs
    assert [(m["name"], m["licenses"]) for m in document["sbom"]["models"]] == [("fraud", ["AGPL-3.0-only"])]


def test_a_cyclonedx_sbom_gives_rego_its_model_components_only() -> None:
    library = SbomComponent(name="numpy", kind="library", licenses=("BSD-3-Clause",))
    engine = RecordingEngine()
    pset = policies(policy(sbom={"required": True}, rego={"packages": ["devmlops.licenses"]}))
    evidence_ = sbom_evidence(summary(model_component(licenses=("MIT",)), library))
    assert decide(request(spec()), pset, evidence_, FakeVerifier(), engine).allowed
    assert [m["name"] for m in engine.inputs[0]["sbom"]["models"]] == ["fraud"]


def test_a_required_sbom_signature_must_verify() -> None:
    good = json.dumps({"authority": "release", "sha": 2})
    bad = json.dumps({"authority": "mallory", "sha": 2})
    pset = sbom_policy(requireSignature=True)
    assert "policy requires a signed SBOM" in run(spec(), pset, sbom_evidence(summary(model_component()))).message
    signed = sbom_evidence(summary(model_component()), sbom_signature=Document("s", text=good))
    assert run(spec(), pset, signed).allowed
    forged = sbom_evidence(summary(model_component()), sbom_signature=Document("s", text=bad))
    assert "SBOM signature does not verify" in run(spec(), pset, forged).message


def test_a_required_sbom_signature_requires_the_sbom_whatever_required_says() -> None:
    pset = policies(policy(sbom={"required": False, "requireSignature": True}))
    assert "spec.sbom is missing" in run(spec(), pset, evidence(bundle("release"))).message
    assert run(spec(), policies(policy(sbom={"required": False})), evidence(bundle("release"))).allowed


# -- operations ------------------------------------------------------------------------------------------


def test_scaling_down_is_always_allowed_even_when_the_signature_no_longer_passes() -> None:
    old = spec(runtime={"kind": "kserve", "replicas": 3})
    new = spec(runtime={"kind": "kserve", "replicas": 1})
    decision = decide(request(new, operation="UPDATE", old=old), policies(policy()), evidence(), FakeVerifier())
    assert decision.allowed
    assert decision.results[0].reason == "scaling down is always allowed"
    up = decide(request(old, operation="UPDATE", old=new), policies(policy()), evidence(), FakeVerifier())
    assert not up.allowed


def test_a_cluster_model_policy_is_admitted_only_when_it_compiles() -> None:
    kind = GroupVersionKind("devmlops.io", "v1alpha1", "ClusterModelPolicy")
    broken = policy(threshold=3)

    def review(obj: dict[str, Any]) -> AdmissionRequest:
        return AdmissionRequest(
            uid="u",
            kind=kind,
            operation="CREATE",
            namespace="",
            name="p",
            username="admin",
            groups=(),
            object=obj,
            old_object=None,
        )

    assert decide(review(policy()), PolicySet(), Evidence(), FakeVerifier()).allowed
    denied = decide(review(broken), PolicySet(), Evidence(), FakeVerifier())
    assert "spec.threshold: got 3, expected 1 to 1" in denied.message


# -- a model goes by its signed name where policies select by name ------------------------------------------


def test_where_a_policy_selects_by_name_a_model_must_use_its_signed_name() -> None:
    """A strict policy selects "fraud" by name; a broader one selects the namespace. Renaming the model in its spec
    would take it out of the strict policy: where any policy selects by name, the name must be the signed one."""
    strict = policy("strict", selector={"models": ["fraud"]}, sbom={"required": True})
    broad = policy("broad")
    renamed = spec(model={"name": "scratchpad", "uri": "s3://models-prod/fraud/1", "digest": DIGEST})
    decision = run(renamed, policies(strict, broad), evidence(bundle("release", model="fraud")))
    assert not decision.allowed
    assert "spec.model.name: got 'scratchpad', expected 'fraud', the name the signature covers" in decision.message
    assert "strict" in decision.message
    assert run(renamed, policies(broad), evidence(bundle("release", model="fraud"))).allowed  # names decide nothing
    signed_name = run(spec(), policies(strict, broad), evidence(bundle("release", model="fraud")))
    assert (
        "sbom gate (policy strict)" in signed_name.message
    )  # under its signed name the strict policy selects it (and wants an SBOM)


def test_name_binding_of_an_sbom_uses_only_names_the_signature_covers() -> None:
    """With allowNameBinding, an SBOM component binds by a signed name, never by spec.model.name (the requester's)."""
    from devmlops.core.sbom import MODEL_KIND, SbomComponent, SbomSummary

    other = SbomSummary(
        format="cyclonedx",
        spec_version="1.6",
        components=(SbomComponent(name="benign", kind=MODEL_KIND, hashes=(("sha256", "ef" * 32),)),),
    )
    named = policy(sbom={"required": True, "allowNameBinding": True})
    doc = Document("spec.sbom.document.inline", text="{}")
    renamed = spec(model={"name": "benign", "uri": "s3://models-prod/fraud/1", "digest": DIGEST})
    decision = run(renamed, policies(named), evidence(bundle("release", model="fraud"), sbom=doc, sbom_summary=other))
    assert not decision.allowed
    assert "SBOM binding" in decision.message


def test_a_new_model_deployment_named_as_another_ones_canary_is_denied_naming_the_clash() -> None:
    """'fraud-canary' is where fraud's new version runs during a gated rollout (its Deployment and Service, the target
    of the stable guard's split): the webhook marks a new ModelDeployment under that name (evidence), and it is
    denied; the same model under another name is admitted."""
    named = dataclasses.replace(request(spec()), object={"metadata": {"name": "fraud-canary"}, "spec": spec()})
    decision = decide(named, policies(policy()), evidence(bundle("release"), reserved_suffix="-canary"), FakeVerifier())
    assert not decision.allowed
    clash = next(r for r in decision.results if r.gate == "address")
    assert "the name fraud-canary" in clash.reason
    assert "ModelDeployment fraud's new version" in clash.reason
    assert "-canary" in clash.hint
    assert decide(named, policies(policy()), evidence(bundle("release")), FakeVerifier()).allowed


def test_a_new_model_deployment_named_as_another_ones_kserve_predictor_is_denied() -> None:
    """A Triton ModelDeployment "fraud-predictor" would render its Service under KServe's predictor address of fraud."""
    named = dataclasses.replace(request(spec()), object={"metadata": {"name": "fraud-predictor"}, "spec": spec()})
    decision = decide(
        named, policies(policy()), evidence(bundle("release"), reserved_suffix="-predictor"), FakeVerifier()
    )
    clash = next(r for r in decision.results if r.gate == "address")
    assert not decision.allowed
    assert "KServe's predictor of ModelDeployment fraud" in clash.reason


@pytest.mark.parametrize("name", ["fraud.v2", "1fraud", "fraud-", "Fraud", "f" * 64])
def test_a_model_deployment_whose_name_no_service_may_carry_is_denied(name: str) -> None:
    """Operator deputy review: "fraud.v2" is a valid ModelDeployment name and a valid Deployment name, but no
    Service's: the operator wrote the Deployment, never the Service, and so never the status naming the child."""
    named = dataclasses.replace(request(spec()), object={"metadata": {"name": name}, "spec": spec()})
    decision = decide(named, policies(policy()), evidence(bundle("release")), FakeVerifier())
    assert not decision.allowed
    clash = next(r for r in decision.results if r.gate == "address")
    assert "metadata.name" in clash.reason
    assert "no DNS label" in clash.reason


@pytest.mark.parametrize("name", ["fraud", "fraud-v2", "f" * 63, "a1"])
def test_a_model_deployment_named_as_a_service_may_be_is_not_denied_for_its_name(name: str) -> None:
    named = dataclasses.replace(request(spec()), object={"metadata": {"name": name}, "spec": spec()})
    assert decide(named, policies(policy()), evidence(bundle("release")), FakeVerifier()).allowed


def _spdx2(model: Any, license_id: str, *, only: tuple[str, ...] = (), checksums: bool = True) -> str:
    """An SPDX 2.3 SBOM listing the files of the folder ``model`` (or ``only`` those), with their SHA-256."""
    import hashlib

    files = [
        {
            "SPDXID": f"SPDXRef-File-{i}",
            "fileName": f"./{path.name}",
            "licenseConcluded": license_id,
            **(
                {"checksums": [{"algorithm": "SHA256", "checksumValue": hashlib.sha256(path.read_bytes()).hexdigest()}]}
                if checksums
                else {}
            ),
        }
        for i, path in enumerate(sorted(p for p in model.iterdir() if p.is_file() and (not only or p.name in only)))
    ]
    return json.dumps(
        {
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": model.name,
            "documentNamespace": f"https://example.com/spdx/{model.name}",
            "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: devmlops-tests"]},
            "files": files,
        }
    )


def _two_models_sharing_a_config(tmp_path: Any, **sbom_rules: Any) -> tuple[Any, Any, Any]:
    """Real signatures, real SBOM parsing: models "base" and "tuned", both signed by the release key, share
    config.json. Returns both folders and ``decided(sbom)``: "tuned" decided with ``sbom`` (signed by the release key)
    under a policy that requires a signed SBOM and denies GPL-3.0-only (plus ``sbom_rules``)."""
    from devmlops.adapters.blobsign import sign_blob_with_key
    from devmlops.adapters.oms import OmsVerifier
    from devmlops.adapters.sbom import parse_sbom
    from devmlops.core.policy import Authority
    from tests.support.models import make_key, make_model, sign_with_key

    key = make_key(tmp_path, "release")
    config = b'{"layers": 2}'
    base = make_model(tmp_path / "base", {"weights.bin": b"\x01" * 1024, "config.json": config})
    tuned = make_model(tmp_path / "tuned", {"weights.bin": b"\x02" * 1024, "config.json": config})
    authority = Authority(name="release", kind="key", public_key=key.public_pem)
    tuned_bundle = sign_with_key(tuned, key, tmp_path / "tuned.sig")
    tuned_digest = OmsVerifier().verify_model(tuned_bundle, authority).digest
    rules = {"required": True, "requireSignature": True, "deniedLicenses": ["GPL-3.0-only"], **sbom_rules}
    pset = policies(
        {
            "metadata": {"name": "prod", "resourceVersion": "7"},
            "spec": {"authorities": [{"name": "release", "key": {"publicKey": key.public_pem}}], "sbom": rules},
        }
    )
    model = spec(model={"name": "tuned", "uri": "s3://models-prod/tuned/1", "digest": tuned_digest})

    def decided(sbom: str) -> Any:
        signature = sign_blob_with_key(sbom.encode(), key.private.read_bytes())
        ev = evidence(
            tuned_bundle,
            sbom=Document("spec.sbom.document.inline", text=sbom),
            sbom_summary=parse_sbom(sbom),
            sbom_signature=Document("spec.sbom.signature.inline", text=signature),
        )
        return decide(request(model), pset, ev, OmsVerifier())

    return base, tuned, decided


def test_a_signed_sbom_of_another_model_does_not_bind_through_one_file_the_two_models_share(tmp_path: Any) -> None:
    """The signed SPDX 2 SBOM of "base" (Apache-2.0) lists config.json's SHA-256 among its files; shown with "tuned"
    (whose own SBOM says GPL-3.0-only, denied), it bound through that one shared file and "tuned" was admitted. A file
    digest binds only when the SBOM covers every file the signature covers."""
    base, tuned, decided = _two_models_sharing_a_config(tmp_path)
    own = decided(_spdx2(tuned, "GPL-3.0-only"))
    assert not own.allowed
    assert "which the policy denies (GPL-3.0-ONLY)" in own.message  # its own SBOM: refused, as it should be
    borrowed = decided(_spdx2(base, "Apache-2.0"))
    assert not borrowed.allowed, "an SBOM of another model bound through one shared file"
    assert "SBOM binding" in borrowed.message
    assert "weights.bin" in borrowed.message  # the signed file the SBOM does not cover is named
    assert decided(_spdx2(tuned, "Apache-2.0")).allowed  # an SBOM covering every signed file still binds


def test_with_name_binding_one_shared_file_name_does_not_bind_another_models_sbom(tmp_path: Any) -> None:
    """With allowNameBinding, a component named like ONE signed file bound: any signed SBOM that lists a config.json
    (SPDX 2 lists every file, and any file may bind) described every model carrying one. A name binds as a digest
    does: the signed model's name, or every signed file's."""
    base, tuned, decided = _two_models_sharing_a_config(tmp_path, allowNameBinding=True)
    borrowed = decided(_spdx2(base, "Apache-2.0", only=("config.json",), checksums=False))
    assert not borrowed.allowed, "an SBOM of another model bound by one shared file name"
    assert "not covered: weights.bin" in borrowed.message
    assert decided(_spdx2(tuned, "Apache-2.0", checksums=False)).allowed  # every signed file named: binds


def test_a_triton_model_whose_signed_files_are_a_python_backend_is_not_admitted_as_onnx(tmp_path: Any) -> None:
    from devmlops.adapters.oms import OmsVerifier
    from devmlops.core.policy import Authority
    from tests.support.models import make_key, make_model, sign_with_key

    key = make_key(tmp_path, "release")
    files = {"fraud/config.pbtxt": b'backend: "python"\n', "fraud/1/model.py": b"import os\nos.system('id')\n"}
    model = make_model(tmp_path / "fraud", files)
    bundle = sign_with_key(model, key, tmp_path / "fraud.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="release", kind="key", public_key=key.public_pem)).digest
    onnx_only = {
        "authorities": [{"name": "release", "key": {"publicKey": key.public_pem}}],
        "allow": {"formats": ["onnx"]},
    }
    triton = {"kind": "triton", "image": "nvcr.io/nvidia/tritonserver@sha256:" + "2" * 64}
    declared = spec(model={"name": "fraud", "uri": "s3://m/fraud", "format": "onnx", "digest": digest}, runtime=triton)
    decision = decide(request(declared), policies(policy(**onnx_only)), evidence(bundle), OmsVerifier())
    assert not decision.allowed, "a python backend (code) admitted under a policy that allows onnx only"
    assert "fraud/1/model.py: got format python" in decision.message
    assert "expected one of ['onnx']" in decision.message
    onnx_files = {"fraud/config.pbtxt": b'backend: "onnxruntime"\n', "fraud/1/model.onnx": b"onnx"}
    onnx_model = make_model(tmp_path / "onnx", onnx_files)
    onnx_bundle = sign_with_key(onnx_model, key, tmp_path / "onnx.sig")
    onnx_digest = OmsVerifier().verify_model(onnx_bundle, Authority(name="r", kind="key", public_key=key.public_pem))
    onnx = spec(
        model={"name": "fraud", "uri": "s3://m/fraud", "format": "onnx", "digest": onnx_digest.digest}, runtime=triton
    )
    admitted = decide(request(onnx), policies(policy(**onnx_only)), evidence(onnx_bundle), OmsVerifier())
    assert admitted.allowed, admitted.message
    # The same python model where no policy restricts formats: nothing to judge by name.
    assert decide(
        request(declared), policies(policy(authorities=onnx_only["authorities"])), evidence(bundle), OmsVerifier()
    ).allowed


def test_a_model_deployment_takes_no_finalizer_but_the_operators() -> None:
    """A ModelDeployment being deleted is never re-checked by the operator: a finalizer nobody removes kept it
    terminating, its model server running after its key was revoked (mallory added one, then deleted it)."""
    signed = evidence(bundle("release"))
    held = dataclasses.replace(
        request(spec()), object={"metadata": {"finalizers": ["mallory.example.com/keep"]}, "spec": spec()}
    )
    refused = decide(held, policies(policy()), signed, FakeVerifier())
    assert not refused.allowed
    assert "metadata.finalizers" in refused.message
    assert "mallory.example.com/keep" in refused.message
    scaled = spec(runtime={"kind": "kserve", "replicas": 1})
    down = dataclasses.replace(
        request(scaled, operation="UPDATE", old=spec(runtime={"kind": "kserve", "replicas": 3})),
        object={"metadata": {"finalizers": ["mallory.example.com/keep"]}, "spec": scaled},
    )
    assert not decide(down, policies(policy()), signed, FakeVerifier()).allowed  # not carried in with a scale-down
    kept = {"metadata": {"finalizers": ["devmlops.io/operator", "mallory.example.com/keep"]}, "spec": spec()}
    unchanged = dataclasses.replace(request(spec(), operation="UPDATE"), object=kept, old_object=kept)
    assert decide(unchanged, policies(policy()), signed, FakeVerifier()).allowed  # a stored one is not re-judged
    operators = {"metadata": {"finalizers": ["devmlops.io/operator"]}, "spec": spec()}
    added = dataclasses.replace(request(spec(), operation="UPDATE", old=spec()), object=operators)
    assert decide(added, policies(policy()), signed, FakeVerifier()).allowed
