"""Benchmark: `devmlops verify`'s byte check on a generated model against Python's hashlib SHA-256 of the same
bytes on one core, and its scaling to every core. Run with `make bench-verify`."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from devmlops.adapters.modelverify import check_model_bytes
    from devmlops.adapters.oms import OmsVerifier
    from devmlops.core.policy import Authority
    from tests.bench.report import write_section
    from tests.support.models import make_key, sign_with_key

    with tempfile.TemporaryDirectory(dir=os.environ.get("DEVMLOPS_BENCH_DIR")) as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        chunk = os.urandom(2**20)
        per_file = args.size_mib // args.files
        for index in range(args.files):
            with (folder / f"shard-{index:02d}.bin").open("wb") as handle:
                for _ in range(per_file):
                    handle.write(chunk)
        total = per_file * args.files * 2**20
        key = make_key(Path(tmp))
        bundle = sign_with_key(folder, key, Path(tmp) / "model.sig")
        signed = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key.public_pem))

        def hashlib_one_core() -> float:
            started = time.perf_counter()
            for path in sorted(folder.iterdir()):
                with path.open("rb") as handle:
                    hashlib.file_digest(handle, "sha256")
            return time.perf_counter() - started

        def verify(workers: int) -> float:
            started = time.perf_counter()
            assert check_model_bytes(folder, signed, workers=workers).ok
            return time.perf_counter() - started

        hashlib_one_core()  # warm the page cache so that every run reads from memory
        base = min(hashlib_one_core() for _ in range(2))
        one = min(verify(1) for _ in range(2))
        cores = os.cpu_count() or 1
        every = min(verify(cores) for _ in range(2))
    mib = total / 2**20
    text = "\n".join(
        [
            "## Verifier: bytes checked against the signature",
            "",
            f"Command: `make bench-verify` (python -m tests.bench.bench_verify --size-mib {args.size_mib} "
            f"--files {args.files})  ",
            f"A generated {mib:.0f} MiB model in {args.files} files, signed with model_signing (files, sha256), "
            "read from the page cache; best of two runs each.",
            "",
            "| run | seconds | MiB/s | vs hashlib on one core |",
            "|---|---:|---:|---:|",
            f"| hashlib.file_digest sha256, one core | {base:.2f} | {mib / base:.0f} | 100% |",
            f"| devmlops verify, 1 worker | {one:.2f} | {mib / one:.0f} | {base / one:.0%} |",
            f"| devmlops verify, {cores} workers | {every:.2f} | {mib / every:.0f} | {base / every:.0%} |",
            "",
            "Goal: at least 90% of hashlib per core.",
            "",
        ]
    )
    print(text)
    write_section(args.output, text)


if __name__ == "__main__":
    main()
