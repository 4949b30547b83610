"""Benchmark: evidence. Attestation verification per admission (cold, and warm from the result cache as bundles are),
the scan of a 1 GiB model against reading the same bytes with hashlib, and `devmlops evaluate` on the demo model.
Run with `make bench-evidence`; it rewrites its section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


def _per_call(action: Callable[[], object], count: int) -> float:
    """Median seconds of ``count`` calls (timed one by one)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _admission(tmp: Path, opa_url: str | None) -> dict[str, float]:
    from devmlops.adapters.oms import OmsVerifier
    from devmlops.adapters.opa import OpaEngine
    from devmlops.adapters.verifycache import CachingVerifier
    from devmlops.core.attestation import VerifiedAttestation
    from devmlops.core.decision import decide
    from devmlops.core.evidence import Document, Evidence
    from devmlops.core.policy import Authority, PolicySet, compile_policy
    from devmlops.core.review import AdmissionRequest, GroupVersionKind
    from tests.support.evidence import attestation, now_rfc3339, predicate
    from tests.support.models import make_key
    from tests.unit.core.fakes import FakeVerifier, bundle

    key = make_key(tmp, "evaluators")
    authority = Authority(name="evaluators", kind="key", public_key=key.public_pem)
    kinds = ("evaluation", "fairness", "scan")
    bundles = [attestation(kind, predicate(kind), DIGEST, key=key) for kind in kinds]
    figures = {"cold": _per_call(lambda: OmsVerifier().verify_attestation(bundles[1], authority), 200)}
    cache = CachingVerifier(OmsVerifier())
    cache.verify_attestation(bundles[1], authority)
    figures["warm"] = _per_call(lambda: cache.verify_attestation(bundles[1], authority), 5000)

    class Verifier(FakeVerifier):
        def verify_attestation(self, text: str, who: Authority) -> VerifiedAttestation:
            return cache.verify_attestation(text, who)

    def policies(conditions: bool) -> PolicySet:
        requirements = [
            {
                "name": kind,
                "predicateType": kind,
                "authorities": [{"name": "evaluators", "key": {"publicKey": key.public_pem}}],
                "maxAge": "30d",
                **({"conditions": {"package": "devmlops.evidence"}} if conditions else {}),
            }
            for kind in kinds
        ]
        spec = {"authorities": [{"name": "release", "key": {"publicKey": key.public_pem}}], "evidence": requirements}
        return PolicySet((compile_policy({"metadata": {"name": "bench"}, "spec": spec}),))

    obj = {
        "metadata": {"name": "fraud", "namespace": "ml"},
        "spec": {
            "model": {"name": "fraud", "uri": "s3://m/fraud", "digest": DIGEST},
            "runtime": {"kind": "kserve"},
            "signature": {"inline": bundle("release")},
            "attestations": [{"inline": b} for b in bundles],
        },
    }
    request = AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation="CREATE",
        namespace="ml",
        name="fraud",
        username="alice",
        groups=(),
        object=obj,
        old_object=None,
    )
    documents = tuple(Document(f"spec.attestations[{i}].inline", text=b) for i, b in enumerate(bundles))
    signature = (Document("spec.signature.inline", text=bundle("release")),)
    with_evidence = Evidence(signatures=signature, attestations=documents, now=now_rfc3339())
    without = Evidence(signatures=signature, now=now_rfc3339())
    verifier = Verifier()
    plain, required = (
        PolicySet(
            (
                compile_policy(
                    {
                        "metadata": {"name": "b"},
                        "spec": {"authorities": [{"name": "release", "key": {"publicKey": key.public_pem}}]},
                    }
                ),
            )
        ),
        policies(False),
    )
    assert decide(request, required, with_evidence, verifier).allowed
    figures["decide_without"] = _per_call(lambda: decide(request, plain, without, verifier), 2000)
    figures["decide_with"] = _per_call(lambda: decide(request, required, with_evidence, verifier), 2000)
    if opa_url:
        engine = OpaEngine(opa_url)
        conditioned = policies(True)
        assert decide(request, conditioned, with_evidence, verifier, engine).allowed
        figures["decide_opa"] = _per_call(lambda: decide(request, conditioned, with_evidence, verifier, engine), 300)
    return figures


def _write_pickle(path: Path, mib: int) -> None:
    import numpy as np

    chunk = np.frombuffer(os.urandom(64 * 2**20), dtype=np.float32)
    with path.open("wb") as handle:
        pickle.dump({f"layer{i}": chunk.copy() for i in range(mib // 64)}, handle, protocol=5)


def _write_torch_zip(path: Path, mib: int) -> None:
    """PyTorch's layout: archive/data.pkl (the object graph, with persistent ids) and archive/data/<n> storages."""
    chunk = os.urandom(64 * 2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({f"layer{i}": i for i in range(mib // 64)}, protocol=2))
        for i in range(mib // 64):
            archive.writestr(f"archive/data/{i}", chunk)


def _scan(tmp: Path, mib: int) -> list[tuple[str, int, float, float, float, float]]:
    from picklescan.scanner import scan_file_path

    from devmlops.adapters.scan import scan_model

    rows = []
    for label, name, write in (
        ("one pickle (numpy arrays, protocol 5)", "model.pkl", _write_pickle),
        ("PyTorch-style zip (data.pkl + storages)", "model.pt", _write_torch_zip),
    ):
        path = tmp / name
        write(path, mib)
        size = path.stat().st_size

        def hashed(target: Path = path) -> None:
            with target.open("rb") as handle:
                hashlib.file_digest(handle, "sha256")

        hashed()  # warm the page cache: every run reads from memory
        base = min(_per_call(hashed, 1) for _ in range(3))
        ours = min(_per_call(lambda target=path: scan_model(target), 1) for _ in range(3))  # type: ignore[misc]
        loading = min(_per_call(lambda target=path: scan_model(target, digests=False), 1) for _ in range(3))  # type: ignore[misc]
        raw = min(_per_call(lambda target=path: scan_file_path(str(target)), 1) for _ in range(3))  # type: ignore[misc]
        assert scan_model(path).ok
        rows.append((label, size, base, ours, loading, raw))
        path.unlink()
    return rows


def _evaluate(tmp: Path) -> tuple[float, float]:
    from devmlops.adapters.evaluate import evaluate_model
    from devmlops.harness.evidencemodels import TARGET, train_demo_model, write_demo_data

    model, data = train_demo_model(tmp / "model.pkl"), write_demo_data(tmp / "held-out.csv")
    evaluate_model(model, data, target=TARGET, sensitive_features=["sex"])  # imports and first-call costs
    warm = min(
        _per_call(lambda: evaluate_model(model, data, target=TARGET, sensitive_features=["sex"]), 1) for _ in range(3)
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    argv = [sys.executable, "-m", "devmlops", "evaluate", str(model), "--data", str(data), "--target", TARGET]
    argv += ["--sensitive-feature", "sex", "--output-dir", str(tmp / "out")]
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env, timeout=300)
    return warm, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.bench.report import write_section

    tools = os.environ.get("DEVMLOPS_TOOLS_DIR", "")
    with tempfile.TemporaryDirectory(dir=os.environ.get("DEVMLOPS_BENCH_DIR")) as tmp_name:
        tmp = Path(tmp_name)
        opa: Any = None
        if tools and (Path(tools) / "opa").exists():
            from devmlops.harness.opa import OpaServer

            opa = OpaServer(bin_dir=Path(tools), policies=ROOT / "policies", workdir=tmp).start()
        try:
            admission = _admission(tmp, opa.url if opa else None)
        finally:
            if opa is not None:
                opa.stop()
        scans = _scan(tmp, args.size_mib)
        evaluate_warm, evaluate_cli = _evaluate(tmp)
    ms = 1000.0
    added = (admission["decide_with"] - admission["decide_without"]) * ms
    lines = [
        "## Evidence: attestations, scans and evaluation",
        "",
        f"Command: `make bench-evidence` (python -m tests.bench.bench_evidence --size-mib {args.size_mib}); medians of "
        "many calls for the admission figures, best of three runs for the scans, one core.",
        "",
        "Attestation verification (an EC-key-signed fairness attestation, in-toto statement in a DSSE envelope):",
        "",
        "| what | per call |",
        "|---|---:|",
        "| `OmsVerifier.verify_attestation`, cold (signature, statement, predicate schema) | "
        f"{admission['cold'] * ms:.3f} ms |",
        f"| the same from the result cache (warm, as the webhook runs it) | {admission['warm'] * 1e6:.1f} µs |",
        f"| `decide()` for a ModelDeployment, no evidence required | {admission['decide_without'] * ms:.3f} ms |",
        "| `decide()` with 3 evidence requirements and 3 attestations, warm | "
        f"{admission['decide_with'] * ms:.3f} ms |",
        f"| added per admission / per attestation (target: under 3 ms each) | {added:.3f} ms / {added / 3:.3f} ms |",
    ]
    if "decide_opa" in admission:
        lines.append(
            f"| the same with conditions in Rego (3 queries to a real OPA server on loopback) | "
            f"{admission['decide_opa'] * ms:.3f} ms |"
        )
    lines += [
        "",
        f"Scan of a generated {args.size_mib} MiB model from the page cache, against reading the same bytes with "
        "hashlib (`devmlops scan` also hashes each file for the predicate):",
        "",
        "| file | MiB | hashlib sha256 | devmlops scan | scan / hashlib | without digests (storage initializer) | "
        "picklescan alone |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, size, base, ours, loading, raw in scans:
        mib = size / 2**20
        lines.append(
            f"| {label} | {mib:.0f} | {base:.2f} s ({mib / base:.0f} MiB/s) | {ours:.2f} s ({mib / ours:.0f} MiB/s) "
            f"| {ours / base:.2f}x | {loading:.2f} s ({loading / base:.2f}x) | {raw:.2f} s |"
        )
    lines += [
        "",
        "`devmlops evaluate` on the demo model (logistic regression, 221 held-out rows of scikit-learn's diabetes "
        f"data, fairness by `sex`, ART FGM): {evaluate_warm:.2f} s in process (warm), {evaluate_cli:.2f} s as a "
        "command"
        " (imports of scikit-learn, pandas, fairlearn and ART included).",
        "",
    ]
    write_section(args.output, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
