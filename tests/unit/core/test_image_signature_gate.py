"""The image signature gate inside decide(): the shell's check of spec.runtime.image's signatures (evidence) against
each policy's imageSignatures.authorities. The real registry and cosign are in
tests/integration/test_image_signatures.py."""

from __future__ import annotations

from typing import Any

import pytest

from devmlops.core.decision import decide
from devmlops.core.evidence import Document, Evidence, ImageSignatures, SignedImages
from devmlops.core.gates.imagesig import unsigned_images
from devmlops.core.policy import compile_policy, image_authorities
from devmlops.errors import InvalidInputError
from tests.unit.core.fakes import FakeVerifier, bundle
from tests.unit.core.test_gates import policies, policy, request, spec

IMAGE = "127.0.0.1:5000/triton@sha256:" + "2" * 64
IMAGE_KEY = "-----BEGIN PUBLIC KEY-----\nMFkwEw==\n-----END PUBLIC KEY-----"


def signed_policy(**more: Any) -> Any:
    return policies(
        policy(imageSignatures={"authorities": [{"name": "images", "key": {"publicKey": IMAGE_KEY}}]}, **more)
    )


def image_key_fingerprint() -> str:
    return signed_policy().policies[0].image_authorities[0].fingerprint


def triton(image: str = IMAGE) -> dict[str, Any]:
    return spec(runtime={"kind": "triton", "image": image})


def evidence(found: ImageSignatures | None) -> Evidence:
    return Evidence(signatures=(Document("spec.signature.inline", text=bundle("release")),), image_signature=found)


def image_reason(decision: Any) -> tuple[str, str]:
    return next((r.outcome, r.reason) for r in decision.results if r.gate == "image-signature")


def test_an_image_signed_by_the_policys_key_passes() -> None:
    found = ImageSignatures(image=IMAGE, signers={image_key_fingerprint(): "images"}, bundles=1)
    decision = decide(request(triton()), signed_policy(), evidence(found), FakeVerifier())
    assert decision.allowed, decision.message
    assert image_reason(decision) == ("pass", f"spec.runtime.image '{IMAGE}' signed by images")


def test_an_unsigned_image_is_denied_naming_image_found_and_expected() -> None:
    decision = decide(request(triton()), signed_policy(), evidence(ImageSignatures(image=IMAGE)), FakeVerifier())
    assert not decision.allowed
    assert image_reason(decision) == (
        "fail",
        f"spec.runtime.image '{IMAGE}': got no signature attached (no Sigstore bundle among its OCI referrers); "
        "expected a signature by one of ['images']",
    )


def test_an_image_signed_by_another_key_is_denied_with_the_bundles_problem() -> None:
    found = ImageSignatures(image=IMAGE, bundles=1, problems=("bundle 0: not signed by images",))
    decision = decide(request(triton()), signed_policy(), evidence(found), FakeVerifier())
    assert not decision.allowed
    assert "got 1 signature bundle(s), none valid: bundle 0: not signed by images" in image_reason(decision)[1]


def test_a_registry_that_could_not_be_read_denies_as_an_error() -> None:
    found = ImageSignatures(image=IMAGE, error="signatures could not be read: signature lookup timed out after 2s")
    decision = decide(request(triton()), signed_policy(), evidence(found), FakeVerifier())
    assert not decision.allowed
    assert image_reason(decision)[0] == "error"


def test_a_check_of_another_image_or_none_at_all_is_not_taken_for_this_one() -> None:
    other = ImageSignatures(image=IMAGE.replace("2", "3"), signers={image_key_fingerprint(): "images"}, bundles=1)
    for found in (other, None):
        decision = decide(request(triton()), signed_policy(), evidence(found), FakeVerifier())
        assert not decision.allowed
        assert image_reason(decision)[0] == "error"


def test_policies_without_image_keys_add_no_result_and_kserve_models_are_skipped_with_the_reason() -> None:
    plain = decide(request(triton()), policies(policy()), evidence(None), FakeVerifier())
    assert not [r for r in plain.results if r.gate == "image-signature"]
    kserve = decide(request(spec()), signed_policy(), evidence(None), FakeVerifier())
    assert image_reason(kserve)[0] == "skip"


def test_image_keys_must_be_pem_public_keys() -> None:
    body = policy(imageSignatures={"authorities": [{"name": "images", "key": {"publicKey": "nope"}}]})
    with pytest.raises(InvalidInputError, match=r"spec.imageSignatures.authorities\[0\].key.publicKey"):
        compile_policy(body)


@pytest.mark.parametrize(
    ("authority", "field"),
    [
        ({"certificateChain": {"certificates": "nope"}}, r"\[1\].certificateChain.certificates: expected PEM"),
        ({"keyless": {"identity": "ci@example.com", "issuer": ""}}, r"\[1\].keyless.issuer: expected the OIDC"),
        ({"key": {"publicKey": IMAGE_KEY}, "keyless": {"identity": "a", "issuer": "b"}}, r"\[1\]: .*exactly one"),
    ],
)
def test_image_authorities_take_every_kind_of_model_authority_and_name_the_wrong_field(
    authority: dict[str, Any], field: str
) -> None:
    """Keys, certificate chains (cosign --certificate) and keyless identities, parsed as a model's authorities."""
    good = {"name": "ca", "certificateChain": {"certificates": "-----BEGIN CERTIFICATE-----\nx\n"}}
    compiled = compile_policy(policy(imageSignatures={"authorities": [good]}))
    assert [(a.name, a.kind) for a in compiled.image_authorities] == [("ca", "certificateChain")]
    with pytest.raises(InvalidInputError, match=r"spec.imageSignatures.authorities" + field):
        compile_policy(policy(imageSignatures={"authorities": [good, {"name": "bad", **authority}]}))


def test_every_pinned_runtime_image_must_be_signed_for_each_policy_that_demands_it() -> None:
    """``unsigned_images``: what a serving runtime's review and KServe's predictor Deployment's review report."""
    other = "127.0.0.1:5000/sidecar@sha256:" + "3" * 64
    demands = (("team", ((image_key_fingerprint(), "images"),)),)
    signed = ImageSignatures(image=IMAGE, signers={image_key_fingerprint(): "images"}, bundles=1)
    foreign = ImageSignatures(image=other, bundles=1, problems=("bundle 0: not signed by images",))
    assert unsigned_images([IMAGE], SignedImages(demands, {IMAGE: signed})) == []
    assert unsigned_images([IMAGE, other], SignedImages((), {})) == []  # no policy demands signatures
    assert unsigned_images([IMAGE, other], SignedImages(demands, {IMAGE: signed, other: foreign})) == [
        f"image '{other}' got 1 signature bundle(s), none valid: bundle 0: not signed by images; expected a "
        "signature by one of ['images'] (policy team)"
    ]
    unreadable = ImageSignatures(image=IMAGE, error="signatures could not be read: timeout")
    assert unsigned_images([IMAGE], SignedImages(demands, {IMAGE: unreadable})) == [
        f"image '{IMAGE}': signatures could not be read: timeout"
    ]
    assert unsigned_images([IMAGE], SignedImages(demands, {})) == [
        f"image '{IMAGE}': its signature was not checked (no registry access configured)"
    ]
    assert unsigned_images(["triton:24.08"], SignedImages(demands, {})) == []  # unpinned: the allow-list says so


def test_a_signature_verified_under_one_keyless_trust_root_does_not_count_for_a_policy_trusting_another() -> None:
    """Two ClusterModelPolicies trust the same keyless identity and issuer, one under Sigstore's public-good root and
    one under the company's own (trustConfig). The shell keys what verified by the authority's fingerprint, which left
    the trust root out: the two were one authority, checked once under whichever root came first, and a signature
    verified under the public-good root counted for the policy that trusts only its own."""
    identity = {"identity": "release@corp.example", "issuer": "https://issuer.example"}
    public = policy("public", imageSignatures={"authorities": [{"name": "ci", "keyless": identity}]})
    own = {**identity, "trustConfig": '{"mediaType": "own"}'}
    private = policy("private", imageSignatures={"authorities": [{"name": "ci", "keyless": own}]})
    both = policies(public, private)
    by_public, by_private = (p.image_authorities[0] for p in both.policies)
    assert by_public.fingerprint != by_private.fingerprint
    assert len(image_authorities(both)) == 2, "each trust root must be checked"
    found = ImageSignatures(image=IMAGE, signers={by_public.fingerprint: "ci"}, bundles=1)
    decision = decide(request(triton()), both, evidence(found), FakeVerifier())
    assert not decision.allowed
    failed = [r for r in decision.results if r.gate == "image-signature" and r.outcome == "fail"]
    assert [r.policy for r in failed] == ["private"], decision.message


def test_a_running_kserve_models_images_are_held_to_the_policys_image_keys_now() -> None:
    """The operator's re-check hands in what KServe's predictor runs: signed now passes, a key removed since fails
    (degrade, scale to zero), a registry that cannot be read is an error (the server is kept and retried)."""
    kserve = spec(runtime={"kind": "kserve", "servingRuntime": "sklearn"})
    signed = ImageSignatures(image=IMAGE, signers={image_key_fingerprint(): "images"}, bundles=1)
    unsigned = ImageSignatures(image=IMAGE, bundles=1, problems=("bundle 0: not signed by images",))
    unreadable = ImageSignatures(image=IMAGE, error="signatures could not be read: timeout")

    def decided(found: ImageSignatures) -> tuple[str, str]:
        ev = Evidence(
            signatures=(Document("spec.signature.inline", text=bundle("release")),),
            runtime_image_signatures={IMAGE: found},
        )
        return image_reason(decide(request(kserve), signed_policy(), ev, FakeVerifier()))

    assert decided(signed)[0] == "pass"
    outcome, reason = decided(unsigned)
    assert outcome == "fail"
    assert reason == (
        f"KServe's predictor runs image '{IMAGE}' got 1 signature bundle(s), none valid: bundle 0: not signed by "
        "images; expected a signature by one of ['images'] (policy prod)"
    )
    assert decided(unreadable) == ("error", f"image '{IMAGE}': signatures could not be read: timeout")


DEVMLOPS_IMAGE = "127.0.0.1:5000/devmlops@sha256:" + "4" * 64


def own_image_policy() -> Any:
    authorities = [{"name": "images", "key": {"publicKey": IMAGE_KEY}}]
    return policies(policy(imageSignatures={"authorities": authorities, "devmlopsImage": True}))


def with_own(found: ImageSignatures | None, runtime: ImageSignatures | None = None) -> Evidence:
    signed_runtime = ImageSignatures(image=IMAGE, signers={image_key_fingerprint(): "images"}, bundles=1)
    return Evidence(
        signatures=(Document("spec.signature.inline", text=bundle("release")),),
        image_signature=runtime or signed_runtime,
        devmlops_image_signature=found,
    )


def test_devmlops_own_image_is_held_to_the_image_keys_only_where_the_policy_says_so() -> None:
    unsigned = ImageSignatures(image=DEVMLOPS_IMAGE)
    assert decide(request(triton()), signed_policy(), with_own(unsigned), FakeVerifier()).allowed
    decision = decide(request(triton()), own_image_policy(), with_own(unsigned), FakeVerifier())
    assert not decision.allowed
    assert image_reason(decision) == (
        "fail",
        f"devmlops's own image (the guard and the storage initializer) '{DEVMLOPS_IMAGE}': got no signature attached "
        "(no Sigstore bundle among its OCI referrers); expected a signature by one of ['images']",
    )
    signed = ImageSignatures(image=DEVMLOPS_IMAGE, signers={image_key_fingerprint(): "images"}, bundles=1)
    decision = decide(request(triton()), own_image_policy(), with_own(signed), FakeVerifier())
    assert decision.allowed, decision.message
    assert image_reason(decision) == (
        "pass",
        f"spec.runtime.image '{IMAGE}' signed by images; devmlops's own image (the guard and the storage "
        f"initializer) '{DEVMLOPS_IMAGE}' signed by images",
    )


def test_devmlops_own_image_installed_by_tag_or_never_checked_is_denied() -> None:
    by_tag = ImageSignatures(image="devmlops:0.1.0", problems=("not pinned",))
    outcome, reason = image_reason(decide(request(triton()), own_image_policy(), with_own(by_tag), FakeVerifier()))
    assert outcome == "fail"
    assert "'devmlops:0.1.0', expected an image pinned by digest" in reason
    outcome, reason = image_reason(decide(request(triton()), own_image_policy(), with_own(None), FakeVerifier()))
    assert (outcome, reason) == (
        "error",
        "devmlops's own image (the guard and the storage initializer): its signature was not checked (no registry "
        "access configured for devmlops)",
    )


def test_a_definite_failure_of_either_image_wins_over_an_unreadable_registry_for_the_other() -> None:
    """Revocation must not wait on a registry: a key removed from the policy fails the decision although the other
    image's registry did not answer."""
    unreadable = ImageSignatures(image=IMAGE, error="signatures could not be read: timed out")
    unsigned = ImageSignatures(image=DEVMLOPS_IMAGE)
    decision = decide(request(triton()), own_image_policy(), with_own(unsigned, unreadable), FakeVerifier())
    assert image_reason(decision)[0] == "fail"
    assert "devmlops's own image" in image_reason(decision)[1]


def test_a_kserve_model_skips_the_runtime_image_but_not_devmlops_own() -> None:
    kserve = spec(runtime={"kind": "kserve", "servingRuntime": "sklearn"})
    decision = decide(
        request(kserve), own_image_policy(), with_own(ImageSignatures(image=DEVMLOPS_IMAGE)), FakeVerifier()
    )
    assert not decision.allowed
    assert image_reason(decision)[1].startswith("devmlops's own image")


def test_devmlops_image_is_a_cluster_policy_field_and_a_boolean() -> None:
    with pytest.raises(InvalidInputError, match="devmlopsImage"):
        compile_policy(
            policy(
                imageSignatures={
                    "authorities": [{"name": "i", "key": {"publicKey": IMAGE_KEY}}],
                    "devmlopsImage": "yes",
                }
            )
        )
