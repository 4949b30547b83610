"""k of n signers, through the real API server: a ClusterModelPolicy requiring 2 of 2 authorities admits a model with
one signature bundle per authority (``spec.signature`` plus ``spec.additionalSignatures``); the operator renders an
InferenceService whose verification plan carries both bundles, in the order the ModelDeployment lists them; the
webhook, deriving the plan again, admits that child and denies one whose plan lacks a bundle or reorders them; and
the storage initializer accepts the plan on the real model files. With the first signature alone, the model is
denied."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.servingverify import run_plan
from devmlops.core.plan import VerificationPlan
from devmlops.core.policy import Authority
from devmlops.harness.controlplane import OPERATOR_USER
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import ALLOWED_IMAGES, denied, policy_name, serve
from tests.integration.attacks.test_children import VERIFICATION, isvc_plan, patch_isvc
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    cyclonedx_sbom,
    evidence_config_map,
    from_config_map,
    installed_policy,
    signed_by_evidence,
)
from tests.support.models import make_key, make_model, sign_with_key


@dataclass(frozen=True)
class TwoSigners:
    folder: Path
    model: SignedModel  # signed by "release"; the ConfigMap's model.sig
    second: str  # the same model signed by "security"; the ConfigMap's second.sig
    security_pem: str


@pytest.fixture(scope="module")
def two_signers(tmp_path_factory: pytest.TempPathFactory) -> TwoSigners:
    directory = tmp_path_factory.mktemp("k-of-n")
    folder = make_model(directory / "fraud")
    release, security = make_key(directory, "release"), make_key(directory, "security")
    first = sign_with_key(folder, release, directory / "release.sig")
    second = sign_with_key(folder, security, directory / "security.sig")
    digest = OmsVerifier().verify_model(first, Authority(name="k", kind="key", public_key=release.public_pem)).digest
    model = SignedModel(release, first, digest, cyclonedx_sbom("fraud", digest), "")
    return TwoSigners(folder, model, second, security.public_pem)


@pytest.fixture
def two_of_two(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, two_signers: TwoSigners
) -> Iterator[dict[str, Any]]:
    """Both bundles in the labelled ConfigMap "evidence" and a ClusterModelPolicy requiring both keys."""
    namespace = enforced_namespace
    data = {"model.sig": two_signers.model.bundle, "second.sig": two_signers.second}
    k8s.CoreV1Api(admin).create_namespaced_config_map(namespace, evidence_config_map("evidence", namespace, data))
    pems = (two_signers.model.key.public_pem, two_signers.security_pem)
    body = cluster_policy(policy_name(namespace), namespace, *pems, threshold=2, allow={"images": ALLOWED_IMAGES})
    with installed_policy(admin, stack, body):
        yield body


SECOND = {"additionalSignatures": [from_config_map("evidence", "second.sig")]}


def test_a_model_admitted_two_of_two_is_served_with_both_bundles_and_its_initializer_accepts_them(
    admin: k8s.ApiClient,
    as_user: Callable[[str], k8s.ApiClient],
    enforced_namespace: str,
    two_signers: TwoSigners,
    two_of_two: dict[str, Any],
    tmp_path: Path,
) -> None:
    served = serve(admin, enforced_namespace, two_signers.model, two_of_two, **SECOND)
    plan = VerificationPlan.from_json(isvc_plan(served.child))  # the operator created it: the webhook admitted it
    # Both bundles, in content order (core/plan.py: the same plan whatever order they were read in).
    assert sorted(plan.bundles) == sorted((two_signers.model.bundle, two_signers.second))
    assert (plan.digest, [t for t, _authorities in plan.groups]) == (two_signers.model.digest, [2])

    check = run_plan(f"file://{two_signers.folder}", tmp_path / "served", plan, out=io.StringIO())
    assert (check.ok, check.files) == (True, 2)

    operator = as_user(OPERATOR_USER)
    for bundles in (tuple(reversed(plan.bundles)), (two_signers.model.bundle,)):
        edited = replace(plan, bundles=bundles).to_json()
        message = denied(patch_isvc, operator, served, {"spec": {"predictor": {"annotations": {VERIFICATION: edited}}}})
        assert "differs from what devmlops renders" in message, message

    create = k8s.CustomObjectsApi(admin).create_namespaced_custom_object
    alone = signed_by_evidence("alone", two_signers.model)  # only the first signature
    alone["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    message = denied(create, GROUP, VERSION, enforced_namespace, "modeldeployments", alone, dry_run="All")
    assert "got 1 verified authorities" in message, message
    assert "expected 2 of" in message, message
