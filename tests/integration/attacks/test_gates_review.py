"""Findings of the attack review of a ModelDeployment's own gates (signature, SBOM, allow-lists, tiers, approvals,
Rego input, the mutating webhook's stamps), each through the real API server as ``mallory``, a namespace editor
who is also in ``devmlops:approvers``.

1. Four eyes with a ServiceAccount as the requester: the built-in edit role lets every editor of a namespace act as
   its ServiceAccounts (tokens, impersonation, Pods and token Secrets). mallory creates her high-risk model as the
   team's release bot, so the bot is stamped as its requester, and approves it as herself: one person, both eyes.
2. The Rego input's ``sbom.models`` left out SPDX 2 packages, which the sbom gate binds as the model (SPDX 2 has no AI
   profile): a signed SPDX 2.3 SBOM that states a license the ``devmlops.licenses`` package denies was admitted, while
   the same license in CycloneDX is denied.
3. A storage glob over hosts (``https://*.models.example.com/**``) matched ``https://evil.example?.models.example.com/m``:
   ``*`` does not cross ``/``, but the client ends the host at ``?`` or ``#`` and fetches from ``evil.example``
   (its cases are in ``test_storage_uris.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.blobsign import sign_blob_with_key
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    EDITOR_ROLE,
    admitted,
    bind_role,
    denied,
    user_subject,
)
from tests.integration.attacks.test_four_eyes import (
    _as_token,
    approval,
    approval_required,
    approve,
    high_risk,
    phase,
)
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    create_md,
    cyclonedx_sbom,
    eventually,
    installed_policy,
    model_deployment,
    signed_model,
)

REQUESTED_BY = "devmlops.io/requested-by"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("gates-review"), "fraud")


@pytest.fixture
def release_bot(admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str) -> Iterator[k8s.ApiClient]:
    """The team's release bot: a ServiceAccount of the namespace the cluster admin lets deploy ModelDeployments
    (CI). mallory holds what the built-in edit role grants besides the attacker's Role: tokens for the namespace's
    ServiceAccounts. Yields a client that authenticates with a token she minted for the bot."""
    rbac, core = k8s.RbacAuthorizationV1Api(admin), k8s.CoreV1Api(admin)
    rules = [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]
    rbac.create_namespaced_role(enforced_namespace, {"metadata": {"name": "sa-tokens"}, "rules": rules})
    bind_role(rbac, enforced_namespace, "sa-tokens", "sa-tokens", user_subject("mallory"))
    core.create_namespaced_service_account(enforced_namespace, {"metadata": {"name": "release-bot"}})
    bot = {"kind": "ServiceAccount", "name": "release-bot", "namespace": enforced_namespace}
    bind_role(rbac, enforced_namespace, "release-bot", EDITOR_ROLE, bot)
    token = core.create_namespaced_service_account_token(
        "release-bot", enforced_namespace, {"spec": {"expirationSeconds": 600}}
    )
    with _as_token(mallory, token.status.token) as client:
        yield client


@pytest.fixture
def four_eyes(admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, model: SignedModel) -> Iterator[str]:
    """High risk needs a ModelApproval by a member of devmlops:approvers other than the requester."""
    with approval_required(admin, stack, enforced_namespace, model, f"gates-4e-{enforced_namespace}") as name:
        yield name


def test_an_editor_who_can_act_as_the_requesting_service_account_is_no_second_person(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    release_bot: k8s.ApiClient,
    as_user: Callable[[str], k8s.ApiClient],
    enforced_namespace: str,
    four_eyes: str,
    model: SignedModel,
) -> None:
    """mallory creates her high-risk model with the release bot's token (the bot is stamped as requester) and
    approves it as herself. Refused, naming why; carol, an approver who may only approve there (she cannot act as
    the bot), still can (before: mallory's approval was admitted and the model served)."""
    namespace = enforced_namespace
    bot = f"system:serviceaccount:{namespace}:release-bot"
    create_md(release_bot, namespace, high_risk(model))
    stored = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", "fraud"
    )
    assert stored["metadata"]["annotations"][REQUESTED_BY] == bot
    eventually(lambda: phase(admin, namespace) == "AwaitingApproval", what="AwaitingApproval")

    message = denied(approve, mallory, namespace, approval("mallory-approves", model.digest))
    assert f"'mallory' can act as the requester {bot!r}" in message, message
    assert phase(admin, namespace) == "AwaitingApproval"

    # An approver who cannot act as the bot is a second person.
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rules = [{"apiGroups": [GROUP], "resources": ["modelapprovals"], "verbs": ["create", "get", "list"]}]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "approve-only"}, "rules": rules})
    bind_role(rbac, namespace, "carol-approves", "approve-only", user_subject("carol"))
    admitted(approve, as_user("carol"), namespace, approval("carol-approves", model.digest))
    eventually(lambda: phase(admin, namespace) == "Admitted", what="the model approved by carol being served")


# -- 2. the Rego input's SBOM models ---------------------------------------------------------------------------------

MDS = "modeldeployments"
DENIED = "AGPL-3.0-only"  # in the devmlops.licenses package's default list


def spdx2_sbom(name: str, digest: str, license_id: str) -> str:
    """An SPDX 2.3 SBOM whose one package is the model, bound by its signed digest."""
    package = {
        "SPDXID": f"SPDXRef-Package-{name}",
        "name": name,
        "versionInfo": "1.0.0",
        "downloadLocation": "NOASSERTION",
        "checksums": [{"algorithm": "SHA256", "checksumValue": digest.removeprefix("sha256:")}],
        "licenseConcluded": license_id,
        "licenseDeclared": license_id,
    }
    return json.dumps(
        {
            "spdxVersion": "SPDX-2.3",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": name,
            "dataLicense": "CC0-1.0",
            "documentNamespace": f"https://models.example.com/spdx/{name}",
            "creationInfo": {"created": "2026-11-30T12:00:00Z", "creators": ["Tool: model-pipeline"]},
            "packages": [package],
        }
    )


@pytest.fixture
def licensed(admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, model: SignedModel) -> Iterator[str]:
    """Signed models, signed SBOMs, and the security team's license rule in Rego (devmlops.licenses)."""
    name = f"gates-lic-{enforced_namespace}"[:63]
    body = cluster_policy(
        name,
        enforced_namespace,
        model.key.public_pem,
        sbom={"requireSignature": True},
        rego={"packages": ["devmlops.licenses"]},
        allow={"images": ALLOWED_IMAGES},
    )
    with installed_policy(admin, stack, body):
        yield name


def _with_sbom(model: SignedModel, document: str, fmt: str, name: str) -> dict[str, Any]:
    signature = sign_blob_with_key(document.encode(), model.key.private.read_bytes())
    sbom = {"format": fmt, "document": {"inline": document}, "signature": {"inline": signature}}
    doc = model_deployment(name, model.digest, signature={"inline": model.bundle}, sbom=sbom)
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    return doc


@pytest.mark.parametrize("fmt", ["cyclonedx", "spdx"])
def test_a_denied_license_in_a_signed_sbom_is_denied_by_rego_in_either_format(
    mallory: k8s.ApiClient, enforced_namespace: str, licensed: str, model: SignedModel, fmt: str
) -> None:
    """A signed SBOM of the signed model states a license the Rego package denies: denied whether the SBOM is
    CycloneDX or SPDX 2.3 (before: the SPDX 2.3 one was admitted, its package never reached the Rego input)."""
    document = (
        cyclonedx_sbom("fraud", model.digest, license_id=DENIED)
        if fmt == "cyclonedx"
        else spdx2_sbom("fraud", model.digest, DENIED)
    )
    create = k8s.CustomObjectsApi(mallory).create_namespaced_custom_object
    allowed = (
        spdx2_sbom("fraud", model.digest, "Apache-2.0") if fmt == "spdx" else cyclonedx_sbom("fraud", model.digest)
    )
    admitted(create, GROUP, VERSION, enforced_namespace, MDS, _with_sbom(model, allowed, fmt, "fraud"), dry_run="All")
    message = denied(
        create, GROUP, VERSION, enforced_namespace, MDS, _with_sbom(model, document, fmt, "fraud"), dry_run="All"
    )
    assert f"license {DENIED.upper()}" in message, message
