"""Private registries through the API server and the registered webhook: the cluster admin gives the webhook and the
operator a Docker config JSON (``--registry-auth-file``) for a real distribution registry with htpasswd auth on
loopback. Mallory (the namespace editor) names images and OCI models there: a tag is pinned and a signed image
admitted and served, and an OCI model admitted by the signature attached to its digest, with the admin's
credentials; two more registries over the same storage, one the file has no entry for and one it has the wrong
password for, deny naming the registry and what it answered. A ModelDeployment has no way to name credentials
(docs/policies.md, "Private registries")."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.ociartifact import OciModel
from devmlops.harness.oci import cosign_key_pair, cosign_sign, oci_registry, push_image, registry_storage
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import admitted, denied, policy_name
from tests.integration.attacks.conftest import create_model_deployment as create
from tests.integration.attacks.test_image_signatures import _served_images, triton
from tests.integration.support import SignedModel, model_deployment, trusting
from tests.integration.test_registry_credentials import HTPASSWD, PASSWORD, USER
from tests.support.models import make_model

pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Private:
    basic: str  # the admin's file has its credentials
    unlisted: str  # the admin's file has no entry for it
    wrong: str  # the admin's file has a wrong password for it
    signed_path: str  # nvidia/tritonserver@sha256:..., signed by the platform key
    model_path: str  # models/fraud@sha256:..., the attack model with its OMS bundle attached
    platform_key: str


@pytest.fixture(scope="module")
def private(
    stack: DevmlopsStack, attack_model: SignedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Private]:
    work = tmp_path_factory.mktemp("private-registries")
    with oci_registry(work / "public") as public:
        platform_key, platform_pub = cosign_key_pair(work, "platform")
        signed = push_image(public, "nvidia/tritonserver", "24.08", b"the platform's private triton")
        cosign_sign(platform_key, signed)
        client = OciModel(plain_http=[public])
        try:
            model = client.push(public, "models/fraud", "1.0", make_model(work / "fraud"))
            client.attach_signature(model, attack_model.bundle)
        finally:
            client.close()
        (work / "htpasswd").write_text(HTPASSWD)
        auth = f"  htpasswd:\n    realm: corp\n    path: {work / 'htpasswd'}\n"
        storage = registry_storage(work / "public")
        with (
            oci_registry(work / "basic", storage=storage, auth=auth) as basic,
            oci_registry(work / "unlisted", storage=storage, auth=auth) as unlisted,
            oci_registry(work / "wrong", storage=storage, auth=auth) as wrong,
        ):
            file = work / "dockerconfig.json"
            secret = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            entries = {basic: {"auth": secret}, wrong: {"username": USER, "password": "not-the-password"}}
            file.write_text(json.dumps({"auths": entries}))
            plain = [arg for host in (basic, unlisted, wrong) for arg in ("--oci-plain-http", host)]
            stack.restart_with([*plain, "--registry-auth-file", str(file)])
            try:
                yield Private(
                    basic,
                    unlisted,
                    wrong,
                    signed.removeprefix(f"{public}/"),
                    model.removeprefix(f"oci://{public}/"),
                    platform_pub.read_text(),
                )
            finally:
                stack.restart_with([])


@pytest.fixture
def policy(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel, private: Private
) -> Iterator[dict[str, Any]]:
    hosts = (private.basic, private.unlisted, private.wrong)
    with trusting(
        admin,
        stack,
        enforced_namespace,
        attack_model,
        policy=policy_name(enforced_namespace),
        allow={"images": [*(f"{host}/nvidia/tritonserver@*" for host in hosts), "devmlops:0.1.0"]},
        imageSignatures={"authorities": [{"name": "platform-images", "key": {"publicKey": private.platform_key}}]},
    ) as body:
        yield body


def test_a_signed_image_in_a_private_registry_is_pinned_admitted_and_served_with_the_admins_credentials(
    private: Private,
    policy: dict[str, Any],
    mallory: k8s.ApiClient,
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """The positive control: the tag resolved, the cosign referrer read and verified (webhook), and the operator's
    own check of the image passed too (it rendered the Triton Deployment)."""
    image = f"{private.basic}/{private.signed_path}"
    tagged = image.split("@")[0] + ":24.08"
    stored = admitted(create, mallory, enforced_namespace, triton("private", attack_model, tagged))
    assert stored["spec"]["runtime"]["image"] == image
    assert image in _served_images(admin, enforced_namespace)


def test_an_oci_model_in_a_private_registry_is_admitted_by_the_signature_attached_to_its_digest(
    private: Private, policy: dict[str, Any], mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel
) -> None:
    doc = model_deployment("oci", attack_model.digest, uri=f"oci://{private.basic}/{private.model_path}")
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    admitted(create, mallory, enforced_namespace, doc)


def test_a_registry_the_admins_file_has_no_entry_for_denies_naming_it(
    private: Private, policy: dict[str, Any], mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel
) -> None:
    image = f"{private.unlisted}/{private.signed_path}"
    message = denied(create, mallory, enforced_namespace, triton("unlisted", attack_model, image))
    assert f"registry {private.unlisted} requires credentials (HTTP 401, Basic realm=" in message
    assert "has no entry for it" in message
    tagged = image.split("@")[0] + ":24.08"
    message = denied(create, mallory, enforced_namespace, triton("unlisted-tag", attack_model, tagged))
    assert f"registry {private.unlisted} requires credentials" in message
    doc = model_deployment("unlisted-oci", attack_model.digest, uri=f"oci://{private.unlisted}/{private.model_path}")
    assert f"registry {private.unlisted} requires credentials" in denied(create, mallory, enforced_namespace, doc)


def test_a_registry_that_refuses_the_admins_credentials_denies_saying_so(
    private: Private, policy: dict[str, Any], mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel
) -> None:
    image = f"{private.wrong}/{private.signed_path}"
    message = denied(create, mallory, enforced_namespace, triton("wrong", attack_model, image))
    assert f"registry {private.wrong} refused the credentials --registry-auth-file gives for it" in message
