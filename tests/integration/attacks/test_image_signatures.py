"""Runtime image signatures, attacked by the namespace editor (mallory) through the API server and the registered
webhook, with a real distribution registry on loopback (read by the webhook and the operator over plain HTTP,
``--oci-plain-http``) and real cosign signatures.

The policy names the key that signs the platform's Triton images (``imageSignatures``) and allow-lists the
registry's Triton repository by glob, so an allow-list alone would admit any image there: a Triton image nobody
signed, or one mallory signed with her own cosign key, must be denied; the image the platform signed is admitted
and served. Both denials were admissions with the image signature gate taken out of decide()
(docs/threat-model.md, property 13). The same registry holds the attack model as an OCI artifact with its OMS bundle
attached as a referrer: admitted by digest without spec.signature, denied by tag (admitted with the digest check
taken out; property 14)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.ociartifact import OciModel
from devmlops.harness.oci import cosign_attest, cosign_key_pair, cosign_sign, oci_registry, push_image
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import admitted, denied, policy_name
from tests.integration.attacks.conftest import create_model_deployment as create
from tests.integration.support import (
    SignedModel,
    eventually,
    model_deployment,
    signed_by_evidence,
    trusting,
)
from tests.support.models import make_model

# A cold cache builds the registries first (`make registries` does it before `make test`).
pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Images:
    host: str
    platform_key: str  # PEM
    signed: str
    unsigned: str
    by_mallory: str
    attested: str  # an image the platform's key attested (SLSA provenance) but never signed
    model: str  # oci://...@sha256:..., the attack model's files, its OMS bundle attached as a referrer


@pytest.fixture(scope="module")
def images(
    stack: DevmlopsStack, attack_model: SignedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Images]:
    work = tmp_path_factory.mktemp("oci-attacks")
    attack_files = make_model(work / "fraud")  # the bytes attack_model signed (make_model's defaults)
    with oci_registry(work / "registry") as host:
        platform_key, platform_pub = cosign_key_pair(work, "platform")
        mallory_key, _ = cosign_key_pair(work, "mallory")
        signed = push_image(host, "nvidia/tritonserver", "24.08", b"the platform's triton")
        unsigned = push_image(host, "nvidia/tritonserver", "unsigned", b"an unsigned triton")
        by_mallory = push_image(host, "nvidia/tritonserver", "mallory", b"mallory's triton")
        attested = push_image(host, "nvidia/tritonserver", "built", b"a triton the platform built, not released")
        cosign_sign(platform_key, signed)
        cosign_sign(mallory_key, by_mallory)
        provenance = work / "provenance.json"
        provenance.write_text('{"buildDefinition": {"buildType": "https://example.com/ci"}, "runDetails": {}}')
        cosign_attest(platform_key, attested, provenance)
        client = OciModel(plain_http=[host])
        try:
            model = client.push(host, "models/fraud", "1.0", attack_files)
            client.attach_signature(model, attack_model.bundle)
        finally:
            client.close()
        stack.restart_with(["--oci-plain-http", host])
        try:
            yield Images(host, platform_pub.read_text(), signed, unsigned, by_mallory, attested, model)
        finally:
            stack.restart_with([])


@pytest.fixture
def signed_images_policy(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel, images: Images
) -> Iterator[dict[str, Any]]:
    with trusting(
        admin,
        stack,
        enforced_namespace,
        attack_model,
        policy=policy_name(enforced_namespace),
        allow={"images": [f"{images.host}/nvidia/tritonserver@*", "devmlops:0.1.0"]},
        imageSignatures={"authorities": [{"name": "platform-images", "key": {"publicKey": images.platform_key}}]},
    ) as body:
        yield body


def triton(name: str, model: SignedModel, image: str) -> dict[str, Any]:
    doc = signed_by_evidence(name, model, runtime={"kind": "triton", "image": image})
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    return doc


def test_the_platforms_signed_image_is_admitted_and_served(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    admitted(create, mallory, enforced_namespace, triton("signed", attack_model, images.signed))
    apps = k8s.AppsV1Api(admin)
    deployment = eventually(
        lambda: next(iter(apps.list_namespaced_deployment(enforced_namespace).items), None),
        timeout=30,
        what="the operator's Triton Deployment (the operator checked the signature too)",
    )
    assert images.signed in [c.image for c in deployment.spec.template.spec.containers]


def test_an_unsigned_triton_image_is_denied(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    message = denied(create, mallory, enforced_namespace, triton("unsigned", attack_model, images.unsigned))
    assert f"image-signature gate (policy {signed_images_policy['metadata']['name']}): " in message
    assert f"spec.runtime.image '{images.unsigned}': got no signature attached" in message
    assert "expected a signature by one of ['platform-images']" in message


def test_an_image_mallory_signed_with_her_own_key_is_denied(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    message = denied(create, mallory, enforced_namespace, triton("hers", attack_model, images.by_mallory))
    assert f"spec.runtime.image '{images.by_mallory}': got 1 signature bundle(s), none valid: " in message
    assert "not signed by platform-images" in message


def test_an_image_the_platforms_key_only_attested_is_denied(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """The platform's CI attests every image it builds (SLSA provenance, `cosign attest`) with the key that signs the
    released ones (`cosign sign`); both are DSSE bundles attached as referrers. A provenance statement says how an
    image was built, not that it was released: it was counted as a signature, and the image admitted."""
    message = denied(create, mallory, enforced_namespace, triton("built", attack_model, images.attested))
    assert f"spec.runtime.image '{images.attested}': got 1 signature bundle(s), none valid: " in message
    expected = "'https://sigstore.dev/cosign/sign/v1'"
    assert f"predicateType: got 'https://slsa.dev/provenance/v1', expected {expected}" in message


def test_an_oci_model_is_admitted_by_the_signature_attached_to_its_digest(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """The positive control for OCI sources: no spec.signature, the OMS bundle is the artifact's referrer."""
    doc = model_deployment("oci", attack_model.digest, uri=images.model)
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    admitted(create, mallory, enforced_namespace, doc)


def test_an_oci_model_named_by_a_tag_is_denied(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """A tag can be pushed again after admission: only a digest names what is served."""
    tagged = images.model.split("@")[0] + ":1.0"
    doc = model_deployment("tagged", attack_model.digest, uri=tagged)
    doc["spec"]["signature"] = {"configMapKeyRef": {"name": "evidence", "key": "model.sig"}}
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    message = denied(create, mallory, enforced_namespace, doc)
    assert f"spec.model.uri: got '{tagged}', expected an OCI artifact pinned by its manifest digest" in message
