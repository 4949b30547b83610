"""Team policies only narrow (issue 13, property 5), in the pure core: a ModelPolicy never stands alone, never
replaces a cluster requirement, and may only raise the tier a ClusterModelPolicy assigns."""

from __future__ import annotations

import dataclasses
from typing import Any

from devmlops.core.decision import decide, select_policies
from devmlops.core.evidence import Document, Evidence
from devmlops.core.narrowing import widenings
from devmlops.core.policy import Policy, PolicySet, compile_model_policy, compile_policy
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.core.sbom import MODEL_KIND, SbomComponent, SbomSummary
from tests.unit.core.fakes import DIGEST, FakeVerifier, bundle

PEM = "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----"
NAMESPACE = "team-a"
LABELS = {"kubernetes.io/metadata.name": NAMESPACE}


def cluster(name: str = "platform", *, models: list[str] | None = None, **spec: Any) -> Policy:
    selector: dict[str, Any] = {"namespaceSelector": {"matchLabels": LABELS}}
    if models is not None:
        selector["models"] = models
    return compile_policy(
        {
            "metadata": {"name": name},
            "spec": {"selector": selector, "authorities": [{"name": "platform", "key": {"publicKey": PEM}}], **spec},
        }
    )


def team(name: str = "ours", namespace: str = NAMESPACE, **spec: Any) -> Policy:
    return compile_model_policy({"metadata": {"name": name, "namespace": namespace}, "spec": spec})


MALLORYS_KEY = [{"name": "mallory", "key": {"publicKey": PEM}}]


def md_request(name: str = "fraud", signer: str = "mallory", **spec: Any) -> AdmissionRequest:
    obj = {
        "metadata": {"name": name, "labels": {"devmlops.io/eu-ai-act-risk": "minimal"}},
        "spec": {
            "model": {"name": name, "uri": f"s3://models/{name}", "digest": DIGEST},
            "runtime": {"kind": "kserve"},
            "signature": {"inline": bundle(signer)},
            **spec,
        },
    }
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation="CREATE",
        namespace=NAMESPACE,
        name=name,
        username="mallory",
        groups=("devmlops:ml-engineers",),
        object=obj,
        old_object=None,
    )


def evidence(*signers: str) -> Evidence:
    return Evidence(
        signatures=tuple(Document("spec.signature.inline", text=bundle(s)) for s in signers),
        namespace_labels=LABELS,
    )


def test_no_team_policy_is_selected_where_no_cluster_policy_selects_the_model() -> None:
    alone = PolicySet((team(authorities=MALLORYS_KEY),))
    assert select_policies(alone, namespace=NAMESPACE, namespace_labels=LABELS, model_name="fraud") == []
    elsewhere = PolicySet((cluster(models=["fraud*"]), team()))
    assert select_policies(elsewhere, namespace=NAMESPACE, namespace_labels=LABELS, model_name="shadow") == []
    both = select_policies(elsewhere, namespace=NAMESPACE, namespace_labels=LABELS, model_name="fraud-v2")
    assert [p.name for p in both] == ["platform", f"{NAMESPACE}/ours"]


def test_a_team_policy_of_another_namespace_is_never_selected() -> None:
    policies = PolicySet((cluster(), team(namespace="team-b")))
    assert [
        p.name for p in select_policies(policies, namespace=NAMESPACE, namespace_labels=LABELS, model_name="m")
    ] == ["platform"]


def test_a_model_only_a_team_policy_selects_gets_the_no_match_action_and_says_why() -> None:
    policies = PolicySet((team(authorities=MALLORYS_KEY),))
    decision = decide(md_request("shadow"), policies, evidence("mallory"), FakeVerifier())
    assert not decision.allowed
    assert decision.message == (
        "denied by devmlops: policy gate: no ClusterModelPolicy selects model 'shadow' in namespace 'team-a' "
        "(ModelPolicy team-a/ours only adds to a ClusterModelPolicy, never applies alone); nothing matched means "
        "deny; fix: ask the platform team for a ClusterModelPolicy that selects this namespace and model"
    )


def test_an_empty_team_policy_admits_no_unsigned_model() -> None:
    request = md_request("shadow")
    assert request.object is not None
    del request.object["spec"]["signature"]
    assert not decide(request, PolicySet((team(),)), Evidence(namespace_labels=LABELS), FakeVerifier()).allowed


def test_the_no_match_action_applies_whatever_team_policies_say() -> None:
    allow = PolicySet((team(sbom={"required": True}),), no_match="allow")
    decision = decide(md_request("shadow"), allow, evidence("mallory"), FakeVerifier())
    assert decision.allowed  # allow means allow: the team policy, which would deny (no SBOM), does not apply either
    assert [r.gate for r in decision.results] == ["policy"]


def test_a_team_authority_adds_a_signer_and_never_replaces_the_cluster_one() -> None:
    policies = PolicySet((cluster(), team(authorities=MALLORYS_KEY)))
    own_only = decide(md_request(), policies, evidence("mallory"), FakeVerifier())
    assert not own_only.allowed
    assert own_only.results[0].policy == "platform"
    assert own_only.results[0].outcome == "fail"
    both = decide(md_request(), policies, evidence("platform", "mallory"), FakeVerifier())
    assert both.allowed
    assert both.signer == "platform"  # the signer of record is the one a ClusterModelPolicy trusts


def test_a_team_policy_in_warn_mode_warns_about_its_own_rules_only() -> None:
    policies = PolicySet((cluster(sbom={"required": True}), team(mode="warn", sbom={"required": True})))
    decision = decide(md_request(), policies, evidence("platform"), FakeVerifier())
    assert not decision.allowed
    blocking = [r for r in decision.results if r.blocking]
    assert [(r.gate, r.policy) for r in blocking] == [("sbom", "platform")]


def test_a_team_policy_without_signers_binds_its_sbom_to_the_cluster_verified_signature() -> None:
    component = SbomComponent(name="fraud", kind=MODEL_KIND, hashes=(("sha256", DIGEST.removeprefix("sha256:")),))
    with_sbom = dataclasses.replace(
        evidence("platform"),
        sbom=Document("spec.sbom.document.inline", text="{}"),
        sbom_summary=SbomSummary(format="cyclonedx", spec_version="1.6", components=(component,)),
    )
    policies = PolicySet((cluster(), team(sbom={"required": True})))
    decision = decide(md_request(), policies, with_sbom, FakeVerifier())
    team_sbom = next(r for r in decision.results if r.gate == "sbom" and r.policy == f"{NAMESPACE}/ours")
    assert team_sbom.outcome == "pass", team_sbom.reason
    assert decision.allowed


def test_a_team_policy_may_raise_the_assigned_tier_but_not_lower_it() -> None:
    rules = {"minimumTier": "high", "approvers": {"groups": ["a"]}, "tiers": {"high": {"requireApproval": True}}}
    strict = cluster(compliance=rules)
    assert widenings({"compliance": {"minimumTier": "prohibited"}}, [strict]) == []
    assert widenings({"compliance": {"minimumTier": "high"}}, [strict]) == []
    assert widenings({"compliance": {"minimumTier": "limited"}}, [strict]) == [
        "spec.compliance.minimumTier: got 'limited', but ClusterModelPolicy platform assigns at least 'high' "
        "(a team may only raise it: one of high, prohibited)"
    ]
    assert widenings({"compliance": {"minimumTier": "minimal"}}, [cluster()]) == []


def team_policy_request(spec: dict[str, Any]) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelPolicy"),
        operation="CREATE",
        namespace=NAMESPACE,
        name="ours",
        username="mallory",
        groups=(),
        object={"metadata": {"name": "ours"}, "spec": spec},
        old_object=None,
    )


def test_a_team_policy_where_no_cluster_policy_selects_the_namespace_is_admitted_and_told_it_does_nothing() -> None:
    decision = decide(
        team_policy_request({"authorities": MALLORYS_KEY}),
        PolicySet(),
        Evidence(namespace_labels=LABELS),
        FakeVerifier(),
    )
    assert decision.allowed
    assert "no ClusterModelPolicy selects namespace 'team-a': it applies to nothing until one does" in (
        decision.results[0].reason
    )
