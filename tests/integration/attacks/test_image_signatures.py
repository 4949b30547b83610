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

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.ociartifact import OciModel
from devmlops.core.pinning import PINNED_FROM
from devmlops.harness.oci import (
    cosign_attest,
    cosign_import_key,
    cosign_key_pair,
    cosign_sign,
    oci_registry,
    push_image,
)
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import KSERVE_GROUP, admitted, denied, policy_name, serving_runtime
from tests.integration.attacks.conftest import create_model_deployment as create
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    eventually,
    installed_policy,
    md_status,
    model_deployment,
    signed_by_evidence,
    trusting,
)
from tests.support.models import make_cert_chain, make_model

RUNTIMES = (KSERVE_GROUP, "v1alpha1")
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
    platform_ca: str  # PEM roots the platform's signing certificates chain to
    certified: str  # signed with the platform's certificate
    by_mallory_ca: str  # signed with a certificate from mallory's own CA
    devmlops: str  # devmlops's own image as a platform would install it: pinned, signed with the platform's key


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
        devmlops = push_image(host, "devmlops", "0.1.0", b"devmlops's image: storage initializer and guard")
        cosign_sign(platform_key, devmlops)
        provenance = work / "provenance.json"
        provenance.write_text('{"buildDefinition": {"buildType": "https://example.com/ci"}, "runDetails": {}}')
        cosign_attest(platform_key, attested, provenance)
        certified = push_image(host, "nvidia/tritonserver", "certified", b"the platform's certified triton")
        by_mallory_ca = push_image(host, "nvidia/tritonserver", "mallory-ca", b"mallory's certified triton")
        chains = {}
        for who, image in (("platform-ca", certified), ("mallory-ca", by_mallory_ca)):
            (work / who).mkdir()
            chains[who] = make_cert_chain(work / who)
            key = cosign_import_key(chains[who].leaf_key, work / who, "cosign")
            cosign_sign(key, image, certificate=chains[who].leaf_cert, chain=chains[who].chain)
        client = OciModel(plain_http=[host])
        try:
            model = client.push(host, "models/fraud", "1.0", attack_files)
            client.attach_signature(model, attack_model.bundle)
        finally:
            client.close()
        stack.restart_with(["--oci-plain-http", host])
        try:
            key_pem, ca = platform_pub.read_text(), chains["platform-ca"].ca_pem.read_text()
            yield Images(
                host, key_pem, signed, unsigned, by_mallory, attested, model, ca, certified, by_mallory_ca, devmlops
            )
        finally:
            stack.restart_with([])


def images_policy(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    namespace: str,
    model: SignedModel,
    images: Images,
    *,
    triton_glob: str = "@*",
    authority: dict[str, Any] | None = None,
) -> contextlib.AbstractContextManager[dict[str, Any]]:
    """Image signatures by ``authority`` (the platform key when None) demanded; Triton allowed as
    ``<host>/nvidia/tritonserver<triton_glob>``."""
    platform_key = {"name": "platform-images", "key": {"publicKey": images.platform_key}}
    return trusting(
        admin,
        stack,
        namespace,
        model,
        policy=policy_name(namespace),
        allow={"images": [f"{images.host}/nvidia/tritonserver{triton_glob}", "devmlops:0.1.0"]},
        imageSignatures={"authorities": [authority or platform_key]},
    )


@pytest.fixture
def signed_images_policy(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel, images: Images
) -> Iterator[dict[str, Any]]:
    with images_policy(admin, stack, enforced_namespace, attack_model, images) as body:
        yield body


@pytest.fixture
def certificate_images_policy(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel, images: Images
) -> Iterator[dict[str, Any]]:
    """The platform signs its images with certificates from its own CA (cosign --certificate): the policy names
    the CA, not a key."""
    authority = {"name": "platform-ca", "certificateChain": {"certificates": images.platform_ca}}
    with images_policy(admin, stack, enforced_namespace, attack_model, images, authority=authority) as body:
        yield body


def _served(admin: k8s.ApiClient, namespace: str) -> Any:
    """The Triton Deployment the operator made (once it checked the image signatures too)."""
    apps = k8s.AppsV1Api(admin)
    return eventually(
        lambda: next(iter(apps.list_namespaced_deployment(namespace).items), None),
        timeout=30,
        what="the operator's Triton Deployment (the operator checked the image signature too)",
    )


def _served_images(admin: k8s.ApiClient, namespace: str) -> list[str]:
    return [c.image for c in _served(admin, namespace).spec.template.spec.containers]


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
    assert images.signed in _served_images(admin, enforced_namespace)


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


def test_an_image_signed_with_a_certificate_of_mallorys_own_ca_is_denied(
    images: Images,
    certificate_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """A certificate names who signed only through the CA that issued it: mallory's own CA (same names, another
    key) is not the platform's. The platform's certified image is admitted and served (before certificate-chain
    image authorities, the policy itself was refused)."""
    message = denied(create, mallory, enforced_namespace, triton("hers", attack_model, images.by_mallory_ca))
    assert f"spec.runtime.image '{images.by_mallory_ca}': got 1 signature bundle(s), none valid: " in message
    assert "not signed by platform-ca: signature rejected" in message
    admitted(create, mallory, enforced_namespace, triton("certified", attack_model, images.certified))
    assert images.certified in _served_images(admin, enforced_namespace)


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


def test_a_tag_is_pinned_at_admission_and_pushing_it_again_changes_nothing_that_runs(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    tmp_path: Path,
) -> None:
    """A tag can be pushed again after admission: the mutating webhook writes the digest the tag names when the
    ModelDeployment is written, and from then on only that digest is checked, rendered and pulled. Mallory then
    pushes her own bytes under the tag: the admitted model keeps its digest, and a new ModelDeployment naming the
    tag gets her artifact's digest, which nobody trusted signed (before pinning, any tag was a denial; the pinned
    ModelDeployment was a test failure then)."""
    repository = f"models/{enforced_namespace}"  # this test's own tag: other tests keep theirs
    client = OciModel(plain_http=[images.host])
    try:
        first = client.push(images.host, repository, "1.0", make_model(tmp_path / "fraud"))
        client.attach_signature(first, attack_model.bundle)
        tagged = f"oci://{images.host}/{repository}:1.0"
        doc = model_deployment("tagged", attack_model.digest, uri=tagged)
        doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
        stored = admitted(create, mallory, enforced_namespace, doc)
        assert stored["spec"]["model"]["uri"] == first
        assert json.loads(stored["metadata"]["annotations"][PINNED_FROM]) == {"spec.model.uri": tagged}
        rogue = client.push(images.host, repository, "1.0", make_model(tmp_path / "rogue", {"w.bin": b"mallory" * 9}))
    finally:
        client.close()
    assert rogue != first
    objects = k8s.CustomObjectsApi(mallory)
    kept = objects.get_namespaced_custom_object(GROUP, VERSION, enforced_namespace, "modeldeployments", "tagged")
    assert kept["spec"]["model"]["uri"] == first
    message = denied(create, mallory, enforced_namespace, {**doc, "metadata": {**doc["metadata"], "name": "again"}})
    assert f"spec.signature is not set and {rogue} has no OMS signature attached" in message


def test_a_tag_the_registry_cannot_resolve_is_denied_naming_it(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """Fail closed: no digest, no ModelDeployment; the denial names the field, the tag and the registry's answer.
    A reference outside the OCI grammar (another path on the registry) is refused before any request."""
    missing = images.model.split("@")[0] + ":never-pushed"
    doc = model_deployment("missing", attack_model.digest, uri=missing)
    message = denied(create, mallory, enforced_namespace, doc)
    assert f"registry gate: spec.model.uri: the tag 'never-pushed' of '{missing}' could not be resolved" in message
    assert "(HTTP 404)" in message
    unreachable = model_deployment("down", attack_model.digest, uri="oci://127.0.0.1:9/models/fraud:1.0")
    assert "127.0.0.1:9: ConnectError" in denied(create, mallory, enforced_namespace, unreachable)
    sneaky = model_deployment("sneaky", attack_model.digest, uri=f"oci://{images.host}/models/../v2/_catalog:1")
    assert "expected oci://host/repository[:tag|@sha256:digest]" in denied(create, mallory, enforced_namespace, sneaky)


def test_a_runtime_image_tag_is_pinned_and_the_pinned_image_must_be_signed(
    images: Images,
    signed_images_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """The image tag names the platform's signed Triton: pinned and admitted; the tag of an unsigned one is pinned
    too, and its digest is denied by the image signature gate."""
    name = images.signed.split("@")[0]
    stored = admitted(create, mallory, enforced_namespace, triton("by-tag", attack_model, f"{name}:24.08"))
    assert stored["spec"]["runtime"]["image"] == images.signed
    message = denied(create, mallory, enforced_namespace, triton("unsigned-tag", attack_model, f"{name}:unsigned"))
    assert f"spec.runtime.image '{images.unsigned}': got no signature attached" in message


def _kserve_runtime(name: str, image: str) -> dict[str, Any]:
    body = serving_runtime(name, image, kind="ClusterServingRuntime")
    body["spec"]["supportedModelFormats"][0]["autoSelect"] = False  # named by this test's model only
    return body


def _denied_deployments(stack: DevmlopsStack, namespace: str) -> list[dict[str, Any]]:
    """The webhook's audit records of Deployments it refused in ``namespace``."""
    assert stack.webhook is not None
    found = []
    for line in stack.webhook.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and (record.get("kind"), record.get("namespace")) == ("Deployment", namespace):
            found += [record] if record.get("allowed") is False else []
    return found


def test_a_kserve_runtime_image_nobody_signed_never_runs_a_model(
    images: Images,
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """A KServe model's server image is its ClusterServingRuntime's. Where a policy demands image signatures, a
    runtime with an unsigned image is refused when it is written (even to the cluster admin), and one written before
    the demand cannot run the model: KServe's predictor Deployment is refused (before, the image signature gate
    skipped KServe models and the Deployment was admitted)."""
    api = k8s.CustomObjectsApi(admin)
    old, unsigned, signed = (f"{enforced_namespace}-{s}" for s in ("old", "unsigned", "signed"))
    allow = {"images": [f"{images.host}/nvidia/tritonserver@*", "devmlops:0.1.0"]}
    policy = policy_name(enforced_namespace)
    before = cluster_policy(policy, enforced_namespace, attack_model.key.public_pem, allow=allow)
    with installed_policy(admin, stack, before):  # no image signatures demanded yet
        body = _kserve_runtime(old, images.unsigned)
        admitted(api.create_cluster_custom_object, *RUNTIMES, "clusterservingruntimes", body)
    demand = {"authorities": [{"name": "platform-images", "key": {"publicKey": images.platform_key}}]}
    try:
        with trusting(
            admin, stack, enforced_namespace, attack_model, policy=policy, allow=allow, imageSignatures=demand
        ):
            body = _kserve_runtime(unsigned, images.unsigned)
            message = denied(api.create_cluster_custom_object, *RUNTIMES, "clusterservingruntimes", body)
            assert f"image '{images.unsigned}' got no signature attached; expected a signature by one of" in message
            body = _kserve_runtime(signed, images.signed)
            admitted(api.create_cluster_custom_object, *RUNTIMES, "clusterservingruntimes", body)
            doc = signed_by_evidence("fraud", attack_model, runtime={"kind": "kserve", "servingRuntime": old})
            admitted(create, mallory, enforced_namespace, doc)
            refused = eventually(
                lambda: _denied_deployments(stack, enforced_namespace),
                timeout=60,
                what="the webhook refusing KServe's predictor Deployment on the unsigned runtime image",
            )
            reasons = " ".join(g["reason"] for g in refused[0]["gates"])
            assert f"image '{images.unsigned}' got no signature attached" in reasons
            apps = k8s.AppsV1Api(admin)
            assert not apps.list_namespaced_deployment(enforced_namespace).items
    finally:
        for name in (old, signed):
            with contextlib.suppress(ApiException):  # the signed one was never made if the test failed before it
                api.delete_cluster_custom_object(*RUNTIMES, "clusterservingruntimes", name)


def test_removing_the_image_key_degrades_a_running_kserve_model(
    images: Images,
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """Revocation reaches a KServe model's server image too: its predictor runs the platform-signed runtime image;
    the cluster admin replaces the image key (the old one leaked, say). The operator re-decides the model with the
    images KServe's Deployment runs, degrades it and scales it to zero, as it does a Triton model whose image key
    went (before, the gate skipped KServe models and the model kept serving until a Pod was made again)."""
    api = k8s.CustomObjectsApi(admin)
    runtime = f"{enforced_namespace}-signed"[:63]
    allow = {"images": [f"{images.host}/nvidia/tritonserver@*", "devmlops:0.1.0"]}
    demand = {"authorities": [{"name": "platform-images", "key": {"publicKey": images.platform_key}}]}
    policy = policy_name(enforced_namespace)
    with trusting(
        admin,
        stack,
        enforced_namespace,
        attack_model,
        policy=policy,
        allow=allow,
        imageSignatures=demand,
        onViolation="scaleToZero",
    ):
        body = _kserve_runtime(runtime, images.signed)
        admitted(api.create_cluster_custom_object, *RUNTIMES, "clusterservingruntimes", body)
        try:
            doc = signed_by_evidence("fraud", attack_model, runtime={"kind": "kserve", "servingRuntime": runtime})
            admitted(create, mallory, enforced_namespace, doc)
            apps = k8s.AppsV1Api(admin)
            eventually(
                lambda: apps.list_namespaced_deployment(enforced_namespace).items,
                timeout=60,
                what="KServe's predictor Deployment on the signed runtime image",
            )
            fresh = ec.generate_private_key(ec.SECP256R1()).public_key()
            pem = fresh.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            leaked = {"authorities": [{"name": "platform-images", "key": {"publicKey": pem.decode()}}]}
            before = str(stack.webhook_status().get("policyRevision", ""))
            api.patch_cluster_custom_object(
                GROUP, VERSION, "clustermodelpolicies", policy[:63], {"spec": {"imageSignatures": leaked}}
            )
            stack.wait_for_policies(present=[policy[:63]], revision_not=before)

            def degraded() -> str:
                conditions = md_status(admin, enforced_namespace).get("conditions") or []
                found = next((c for c in conditions if c["type"] == "Degraded" and c["status"] == "True"), None)
                return str(found["message"]) if found else ""

            message = eventually(degraded, timeout=60, what="the operator degrading the KServe model")
            assert f"KServe's predictor runs image '{images.signed}' got 1 signature bundle(s), none valid" in message

            def min_replicas() -> Any:
                isvc = api.get_namespaced_custom_object(
                    KSERVE_GROUP, "v1beta1", enforced_namespace, "inferenceservices", "fraud"
                )
                return isvc["spec"]["predictor"].get("minReplicas")

            eventually(lambda: min_replicas() == 0, timeout=60, what="the InferenceService scaled to zero")
        finally:
            with contextlib.suppress(ApiException):
                api.delete_cluster_custom_object(*RUNTIMES, "clusterservingruntimes", runtime)


def test_devmlops_own_image_is_held_to_the_platforms_key_where_the_policy_says_so(
    images: Images,
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """``imageSignatures.devmlopsImage``: the storage initializer (and the guard) run devmlops's own image in every
    model server's Pod, so a policy that wants every image signed covers it too. Installed by tag (this stack's
    ``devmlops:0.1.0``) it cannot be checked: denied, naming the image and the fix. Installed by digest and signed
    with the platform's key: the same ModelDeployment is admitted (before the field, the policy itself was refused)."""
    authority = {"name": "platform-images", "key": {"publicKey": images.platform_key}}
    with trusting(
        admin,
        stack,
        enforced_namespace,
        attack_model,
        policy=policy_name(enforced_namespace),
        allow={"images": [f"{images.host}/nvidia/tritonserver@*", f"{images.host}/devmlops@*", "devmlops:0.1.0"]},
        imageSignatures={"authorities": [authority], "devmlopsImage": True},
    ):
        message = denied(create, mallory, enforced_namespace, triton("by-tag", attack_model, images.signed))
        assert (
            "devmlops's own image (the guard and the storage initializer): got 'devmlops:0.1.0', expected an image "
            "pinned by digest" in message
        )
        stack.restart_with(["--oci-plain-http", images.host, "--verifier-image", images.devmlops])
        try:
            admitted(create, mallory, enforced_namespace, triton("pinned", attack_model, images.signed))
            # The operator decided the same (it checks devmlops's image too) and renders the pinned image.
            initializers = _served(admin, enforced_namespace).spec.template.spec.init_containers
            assert [c.image for c in initializers] == [images.devmlops]
        finally:
            stack.restart_with(["--oci-plain-http", images.host])
