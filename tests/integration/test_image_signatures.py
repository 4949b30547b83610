"""Runtime image signatures against a real distribution registry on loopback and real cosign signatures
(src/devmlops/harness/oci.py builds both from the Go module proxy): the checker finds the bundle cosign attached as
an OCI referrer and verifies it with the trusted key; another key, an unsigned image, a bundle for another digest, a
tampered bundle and an unreachable registry each fail with a reason. Through the webhook as the namespace editor:
tests/integration/attacks/test_image_signatures.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from devmlops.adapters.ocisig import ImageSignatureChecker, OciClient, SignatureInvalid, verify_bundle
from devmlops.core.evidence import ImageSignatures
from devmlops.core.policy import Authority
from devmlops.harness.oci import cosign_import_key, cosign_key_pair, cosign_sign, oci_registry, push_image
from tests.support.models import make_cert_chain

# A cold cache builds the registries first (`make registries` does it before `make test`).
pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Images:
    host: str
    trusted: Authority
    other: Authority
    signed: str
    unsigned: str
    by_other: str
    certified: str  # signed with a certificate that chains to ``ca``
    ca: Authority
    other_ca: Authority


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    work = tmp_path_factory.mktemp("oci")
    with oci_registry(work / "registry") as host:
        trusted_key, trusted_pub = cosign_key_pair(work, "release")
        other_key, other_pub = cosign_key_pair(work, "mallory")
        signed = push_image(host, "triton", "signed", b"signed server")
        unsigned = push_image(host, "triton", "unsigned", b"unsigned server")
        by_other = push_image(host, "triton", "other", b"mallory's server")
        cosign_sign(trusted_key, signed)
        cosign_sign(other_key, by_other)
        (work / "ca").mkdir()
        (work / "other-ca").mkdir()
        chain, other_chain = make_cert_chain(work / "ca"), make_cert_chain(work / "other-ca")
        certified = push_image(host, "triton", "certified", b"a server signed with a certificate")
        leaf_key = cosign_import_key(chain.leaf_key, work, "leaf")
        cosign_sign(leaf_key, certified, certificate=chain.leaf_cert, chain=chain.chain)
        yield Images(
            host,
            Authority(name="release", kind="key", public_key=trusted_pub.read_text()),
            Authority(name="mallory", kind="key", public_key=other_pub.read_text()),
            signed,
            unsigned,
            by_other,
            certified,
            Authority(name="release-ca", kind="certificateChain", certificates=chain.ca_pem.read_text()),
            Authority(name="other-ca", kind="certificateChain", certificates=other_chain.ca_pem.read_text()),
        )


@contextmanager
def checker(host: str, timeout: float = 2) -> Iterator[ImageSignatureChecker]:
    checking = ImageSignatureChecker(OciClient(plain_http=[host], timeout=timeout), timeout_seconds=timeout)
    try:
        yield checking
    finally:
        checking.close()


def check(images: Images, image: str) -> ImageSignatures:
    with checker(images.host) as checking:
        return checking.check(image, [images.trusted])


def test_the_signature_cosign_attached_verifies_with_the_trusted_key(images: Images) -> None:
    found = check(images, images.signed)
    assert (found.error, found.bundles, dict(found.signers)) == ("", 1, {images.trusted.fingerprint: "release"})


def test_a_signature_by_another_key_is_found_but_not_trusted(images: Images) -> None:
    found = check(images, images.by_other)
    assert (found.error, found.bundles, dict(found.signers)) == ("", 1, {})
    assert found.problems == ("bundle 0: not signed by release",)


def test_a_signature_with_a_certificate_verifies_only_for_the_ca_it_chains_to(images: Images) -> None:
    """cosign's ``--certificate``/``--certificate-chain``: the bundle carries the leaf (and intermediate), checked
    against the authority's roots by model_signing's chain check; a key authority or another CA finds no signer."""
    with checker(images.host) as checking:
        found = checking.check(images.certified, [images.ca])
        elsewhere = checking.check(images.certified, [images.other_ca, images.trusted])
    assert (found.error, found.bundles, dict(found.signers)) == ("", 1, {images.ca.fingerprint: "release-ca"})
    assert (elsewhere.error, dict(elsewhere.signers)) == ("", {})
    assert elsewhere.problems[0].startswith("bundle 0: not signed by other-ca: ")
    assert "signature rejected: certificate signature failure" in elsewhere.problems[0]  # same root name, other key
    assert elsewhere.problems[1] == "bundle 0: not signed by release"  # a certificate is no key


def test_a_certificate_signature_is_bound_to_its_digest(images: Images) -> None:
    """The chain verifies, but the statement names the image it was made for: carried to another digest, refused."""
    client = OciClient(plain_http=[images.host])
    try:
        bundle = client.bundles(images.certified)[0]
    finally:
        client.close()
    with checker(images.host) as checking:
        other_digest = images.unsigned.split("@")[1]
        with pytest.raises(SignatureInvalid, match=f"signed by release-ca .* not {other_digest}"):
            checking._verify(bundle, other_digest, images.ca)


def test_an_unsigned_image_has_no_bundle(images: Images) -> None:
    found = check(images, images.unsigned)
    assert (found.error, found.bundles, dict(found.signers), found.problems) == ("", 0, {}, ())


def test_a_bundle_is_bound_to_its_digest_and_to_every_byte(images: Images) -> None:
    client = OciClient(plain_http=[images.host])
    try:
        bundle = client.bundles(images.signed)[0]
    finally:
        client.close()
    other_digest = images.unsigned.split("@")[1]
    with pytest.raises(SignatureInvalid, match=f"not {other_digest}"):
        verify_bundle(bundle, other_digest, images.trusted)
    document = json.loads(bundle)
    document["dsseEnvelope"]["payload"] = document["dsseEnvelope"]["payload"][:-4] + "AAA="
    with pytest.raises(SignatureInvalid):
        verify_bundle(json.dumps(document), images.signed.split("@")[1], images.trusted)


def test_an_unreachable_registry_is_an_error_not_a_verdict(images: Images) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{closed.getsockname()[1]}"
        with checker(host, timeout=1) as checking:
            found = checking.check(f"{host}/triton@{images.signed.split('@')[1]}", [images.trusted])
    assert found.error.startswith("signatures could not be read: ")


def test_an_image_named_by_tag_alone_is_refused_before_any_lookup(images: Images) -> None:
    found = check(images, f"{images.host}/triton:signed")
    assert found.problems == (f"'{images.host}/triton:signed' is not pinned by a sha256 digest",)


def test_image_signature_cost_per_admission_warm_and_cold(images: Images) -> None:
    """Warm: the bundle list of the digest cached (every admission within 30 s of the first), the bundle verified
    again. Cold: referrers, manifest and bundle read from the registry over loopback HTTP, then verified."""
    import statistics
    import time

    with checker(images.host) as checking:
        cold = []
        for _ in range(10):
            fresh = ImageSignatureChecker(OciClient(plain_http=[images.host], timeout=2), timeout_seconds=2)
            try:
                started = time.perf_counter()
                assert fresh.check(images.signed, [images.trusted]).signers
                cold.append(time.perf_counter() - started)
            finally:
                fresh.close()
        checking.check(images.signed, [images.trusted])
        warm = []
        for _ in range(200):
            started = time.perf_counter()
            assert checking.check(images.signed, [images.trusted]).signers
            warm.append(time.perf_counter() - started)
    warm_ms, cold_ms = statistics.median(warm) * 1000, statistics.median(cold) * 1000
    print(f"\nimage signature cost: warm median {warm_ms:.3f} ms, cold median {cold_ms:.1f} ms")
    assert warm_ms < 5, f"warm median {warm_ms:.3f} ms, expected under 5 ms"
