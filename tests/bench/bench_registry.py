"""Benchmark: what the registry work of an admission costs, against a real distribution registry on loopback.

1. Tag pinning: the mutating webhook's lookup of the digest a tag names (``ImageSignatureChecker.resolve``), never
   cached (a tag is resolved when it is written).
2. An image signature by a certificate chain (``cosign sign --certificate``), the bundle list cached as in
   admission: verified each time, and with the verification cache the webhook and the operator use.

Needs the OCI tools (`make registries`). Run with `make bench-registry`; prints its figures."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

from devmlops.adapters.ocisig import ImageSignatureChecker, OciClient
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.verifycache import CachingVerifier
from devmlops.core.pinning import Reference, parse_reference
from devmlops.core.policy import Authority
from devmlops.core.ports import SignatureVerifier
from devmlops.harness.oci import cosign_import_key, cosign_sign, oci_registry, push_image
from tests.support.models import make_cert_chain


def _timed(runs: int, call: Callable[[], object]) -> tuple[float, float]:
    """(median, p95) of ``runs`` calls, in ms."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return median(times), times[int(len(times) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="calls per figure (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        chain = make_cert_chain(work)
        with oci_registry(work / "registry") as host:
            image = push_image(host, "nvidia/tritonserver", "24.08", b"a certified triton")
            key = cosign_import_key(chain.leaf_key, work, "cosign")
            cosign_sign(key, image, certificate=chain.leaf_cert, chain=chain.chain)
            reference = parse_reference(f"{host}/nvidia/tritonserver:24.08", field="bench")
            ca = Authority(name="ca", kind="certificateChain", certificates=chain.ca_pem.read_text())
            verifiers: dict[str, SignatureVerifier] = {
                "verified each time": OmsVerifier(),
                "verification cached": CachingVerifier(OmsVerifier()),
            }
            print(f"registry on loopback ({host}), {args.runs} calls per figure, median / p95 in ms")
            for label, verifier in verifiers.items():
                checker = ImageSignatureChecker(OciClient(plain_http=[host]), timeout_seconds=2, verifier=verifier)
                _measure(label, checker, image, ca, reference, args.runs, pin=label == "verified each time")


def _measure(
    label: str, checker: ImageSignatureChecker, image: str, ca: Authority, reference: Reference, runs: int, *, pin: bool
) -> None:
    try:
        if pin:
            checker.resolve(reference)
            median_ms, p95_ms = _timed(runs, lambda: checker.resolve(reference))
            print(f"tag pinning (one resolve): {median_ms:.3f} / {p95_ms:.3f}")
        assert checker.check(image, [ca]).signers, "the certified image must verify"
        median_ms, p95_ms = _timed(runs, lambda: checker.check(image, [ca]))
        print(f"certificate-chain image signature, bundle list cached, {label}: {median_ms:.3f} / {p95_ms:.3f}")
    finally:
        checker.close()


if __name__ == "__main__":
    main()
