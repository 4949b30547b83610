"""Property 15 (and 7): a rollout's stable version is held to its policies and its approval for as long as it serves.

While a new version is tried, and after its rollback until the spec changes again, the version that serves is the
stable one the rollout status records, not the spec's. The operator re-decided that version at every tick, but kept
its children as they were and only retried when it no longer passed, and it never looked at the stable version's
approval (only the spec's). So a revoked key, or an approval withdrawn, did not stop it: mallory, who started a
rollout of a second signed version (one that never becomes ready: here no kubelet runs it, anywhere else a version
she breaks on purpose), kept the old version serving at full scale for as long as that rollout's state lasted. Both
tests failed before the fix (the stable Deployment stayed at one replica); the docstrings say what the attack was.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from devmlops.adapters.oms import OmsVerifier
from devmlops.core.policy import Authority
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import ALLOWED_IMAGES, TRITON, admitted, policy_name, serve
from tests.integration.attacks.test_rollout import GUARD, ROLLOUT, _deployment
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    eventually,
    from_config_map,
    installed_policy,
    md_status,
    signed_by_evidence,
)
from tests.support.models import KeyFiles, make_key, make_model, sign_with_key


def _version_two(directory: Path, key: KeyFiles) -> tuple[str, str]:
    """Other bytes of "fraud" signed by ``key``: (bundle, digest)."""
    files = {"weights.bin": b"\x04\x05" * 512, "config.json": b'{"layers": 4}'}
    bundle = sign_with_key(make_model(directory / "v2" / "fraud", files), key, directory / "v2.sig")
    authority = Authority(name="k", kind="key", public_key=key.public_pem)
    return bundle, OmsVerifier().verify_model(bundle, authority).digest


def _set_policy(admin: k8s.ApiClient, stack: DevmlopsStack, name: str, spec: dict[str, Any]) -> None:
    """The cluster admin changes a ClusterModelPolicy; returns once the webhook compiled it."""
    before = str(stack.webhook_status().get("policyRevision", ""))
    k8s.CustomObjectsApi(admin).patch_cluster_custom_object(
        GROUP, VERSION, "clustermodelpolicies", name, {"spec": spec}
    )
    stack.wait_for_policies(present=[name], revision_not=before)


def _replicas(admin: k8s.ApiClient, namespace: str, name: str = "fraud") -> int | None:
    found = _deployment(admin, namespace, name)
    return None if found is None else int(found["spec"].get("replicas") or 0)


def _try_version_two(client: k8s.ApiClient, namespace: str, bundle: str, digest: str) -> None:
    """Start a rollout of the second version (as ``client``, an editor): its bundle in the evidence ConfigMap."""
    k8s.CoreV1Api(client).patch_namespaced_config_map("evidence", namespace, {"data": {"v2.sig": bundle}})
    patch = {"spec": {"model": {"digest": digest}, "signature": from_config_map("evidence", "v2.sig")}}
    admitted(k8s.CustomObjectsApi(client).patch_namespaced_custom_object, GROUP, VERSION, namespace,
             "modeldeployments", "fraud", patch)  # fmt: skip


def _condition(admin: k8s.ApiClient, namespace: str, kind: str) -> str:
    status = md_status(admin, namespace)
    return next((str(c.get("message")) for c in status.get("conditions") or [] if c.get("type") == kind), "")


def _two_versions(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
    tmp_path: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The policy trusts two release keys and scales a model that no longer passes to zero; "fraud" serves version
    one (key one) with a gated rollout and mallory starts version two (key two). Returns the two authorities."""
    second_key = make_key(tmp_path, "release-2")
    bundle, digest = _version_two(tmp_path, second_key)
    key_one = {"name": "key-0", "key": {"publicKey": attack_model.key.public_pem}}
    key_two = {"name": "key-1", "key": {"publicKey": second_key.public_pem}}
    _set_policy(
        admin, stack, trusted["metadata"]["name"], {"authorities": [key_one, key_two], "onViolation": "scaleToZero"}
    )
    serve(admin, namespace, attack_model, trusted, runtime={"kind": "triton", "image": TRITON}, guard=GUARD,
          rollout=ROLLOUT)  # fmt: skip
    _try_version_two(mallory, namespace, bundle, digest)
    return key_one, key_two


def test_a_revoked_stable_version_does_not_serve_on_through_the_rollout(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The policy trusts two release keys and scales a model that no longer passes to zero. "fraud" serves version
    one (key one) with a gated rollout; mallory starts version two (key two), which never becomes ready. The cluster
    admin revokes key one: version one, still the stable version that takes all the traffic, must be scaled to zero
    (before: the operator retried for ever and kept its Deployment at full scale)."""
    namespace, name = enforced_namespace, trusted["metadata"]["name"]
    _key_one, key_two = _two_versions(admin, stack, mallory, namespace, attack_model, trusted, tmp_path)
    eventually(lambda: _deployment(admin, namespace, "fraud-canary"), timeout=60, what="version two's Deployment")
    assert _replicas(admin, namespace) == 1, "version one serves as the stable version"

    _set_policy(admin, stack, name, {"authorities": [key_two]})  # key one revoked
    eventually(
        lambda: _replicas(admin, namespace) == 0,
        timeout=60,
        what=f"the revoked stable version scaled to zero (status: {md_status(admin, namespace).get('conditions')})",
    )
    # The operator scales first and writes the status after: the phase and its reason are read once it is written.
    eventually(lambda: md_status(admin, namespace).get("phase") == "Degraded", timeout=30, what="the status")
    assert f"the stable version {attack_model.digest}" in _condition(admin, namespace, "Degraded")
    assert _deployment(admin, namespace, "fraud-canary") is not None  # version two passes: not the operator's to stop


def test_a_revoked_new_version_does_not_serve_on_beside_the_stable_one(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The other way round: version two (key two) is being tried as "fraud-canary" when the cluster admin revokes
    key two. The model is degraded and scaled to zero, and that must include version two's own Deployment, whose
    Service "fraud-canary" anyone in the cluster can call (before: only the child the status names, the stable
    version's Deployment, was scaled; the revoked version ran on)."""
    namespace, name = enforced_namespace, trusted["metadata"]["name"]
    key_one, _key_two = _two_versions(admin, stack, mallory, namespace, attack_model, trusted, tmp_path)
    eventually(lambda: _replicas(admin, namespace, "fraud-canary") == 1, timeout=60, what="version two's Deployment")

    _set_policy(admin, stack, name, {"authorities": [key_one]})  # key two revoked
    eventually(
        lambda: _replicas(admin, namespace, "fraud-canary") == 0,
        timeout=60,
        what=f"the revoked new version scaled to zero (status: {md_status(admin, namespace).get('conditions')})",
    )
    # The operator scales first and writes the status after: the phase is read once it is written.
    eventually(lambda: md_status(admin, namespace).get("phase") == "Degraded", timeout=30, what="the status")


@pytest.fixture
def four_eyes(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel
) -> Iterator[str]:
    """High risk needs a ModelApproval by a member of devmlops:approvers other than the requester."""
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        enforced_namespace,
        {"metadata": {"name": "evidence", "labels": {"devmlops.io/evidence": "true"}},
         "data": {"model.sig": attack_model.bundle}},
    )  # fmt: skip
    compliance = {
        "approvers": {"groups": ["devmlops:approvers"]},
        "tiers": {"high": {"requireApproval": True, "requiredEvidence": []}},
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterModelPolicy",
        "metadata": {"name": policy_name(enforced_namespace)},
        "spec": {
            "selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": enforced_namespace}}},
            "authorities": [{"name": "key-0", "key": {"publicKey": attack_model.key.public_pem}}],
            "compliance": compliance,
            "allow": {"images": ALLOWED_IMAGES},
        },
    }
    with installed_policy(admin, stack, body):
        yield enforced_namespace


def _approve(client: k8s.ApiClient, namespace: str, name: str, digest: str) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelApproval",
        "metadata": {"name": name},
        "spec": {"modelDeployment": "fraud", "digest": digest},
    }
    api = k8s.CustomObjectsApi(client)
    return cast(dict[str, Any], api.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelapprovals", body))


def test_a_stable_version_whose_approval_was_withdrawn_does_not_serve_on_through_the_rollout(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    bob: k8s.ApiClient,
    four_eyes: str,
    attack_model: SignedModel,
    tmp_path: Path,
) -> None:
    """mallory requests the high-risk "fraud" (version one) with a gated rollout; bob approves it and it serves. She
    then asks for version two, which bob approves too, and which never becomes ready, so version one serves on as
    the stable version. bob withdraws his approval of version one (deletes it): version one must stop, as it would
    were it the spec's version (before: only the spec's approval was looked at, and version one served on)."""
    namespace = four_eyes
    doc = signed_by_evidence("fraud", attack_model, runtime={"kind": "triton", "image": TRITON}, guard=GUARD,
                             rollout=ROLLOUT)  # fmt: skip
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "high"}
    admitted(k8s.CustomObjectsApi(mallory).create_namespaced_custom_object, GROUP, VERSION, namespace,
             "modeldeployments", doc)  # fmt: skip
    _approve(bob, namespace, "bob-approves-one", attack_model.digest)
    eventually(lambda: _replicas(admin, namespace) == 1, timeout=60, what="version one served once approved")

    bundle, digest = _version_two(tmp_path, attack_model.key)
    _try_version_two(mallory, namespace, bundle, digest)
    eventually(lambda: md_status(admin, namespace).get("phase") == "AwaitingApproval", timeout=60,
               what="version two awaiting its approval")  # fmt: skip
    _approve(bob, namespace, "bob-approves-two", digest)
    eventually(
        lambda: _deployment(admin, namespace, "fraud-canary") and _replicas(admin, namespace) == 1,
        timeout=60,
        what="version two tried beside version one, which serves again",
    )

    k8s.CustomObjectsApi(bob).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelapprovals", "bob-approves-one"
    )
    eventually(
        lambda: _replicas(admin, namespace) == 0,
        timeout=60,
        what=f"the unapproved stable version scaled to zero (status: {md_status(admin, namespace).get('conditions')})",
    )
    # The operator scales first and writes the status after: the phase is read once it is written.
    eventually(lambda: md_status(admin, namespace).get("phase") == "AwaitingApproval", timeout=30, what="the status")
    assert f"the stable version {attack_model.digest}" in _condition(admin, namespace, "AwaitingApproval")
