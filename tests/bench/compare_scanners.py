"""Compare model-file scanners on the same malicious and clean files (tests/support/evidence.py): which files each
one finds unsafe, misses, or flags although they run nothing. `python -m tests.bench.compare_scanners` prints the
table docs/evidence.md shows. modelscan and fickling are compared only: `pip install modelscan fickling` to run."""

from __future__ import annotations

import importlib.metadata
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.evidence import clean_files, malicious_files


def _devmlops(path: Path) -> str:
    """picklescan as devmlops runs it (plus the Keras Lambda check and the choice of which files to scan)."""
    from devmlops.adapters.scan import scan_model

    return {"unsafe": "unsafe", "error": "error", "suspicious": "ok", "clean": "ok", "skipped": "skipped"}[
        scan_model(path).files[0].status
    ]


def _picklescan(path: Path) -> str:
    from picklescan.scanner import scan_file_path

    result = scan_file_path(str(path))
    if result.issues_count:
        return "unsafe"
    return "error" if result.scan_err else "ok" if result.scanned_files else "skipped"


def _modelscan(path: Path) -> str:
    from modelscan.modelscan import ModelScan

    report = ModelScan().scan(str(path))
    if report["issues"]:
        return "unsafe"
    if report.get("errors"):
        return "error"
    return "ok" if report["summary"]["scanned"]["total_scanned"] else "skipped"


def _fickling(path: Path) -> str:
    import fickling

    try:
        return "ok" if fickling.is_likely_safe(str(path)) else "unsafe"
    except Exception:  # fickling raises on what it cannot parse: that is its verdict here
        return "error"


SCANNERS: dict[str, Callable[[Path], str]] = {
    "devmlops": _devmlops,
    "picklescan": _picklescan,
    "modelscan": _modelscan,
    "fickling": _fickling,
}


def main() -> None:
    logging.disable(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        bad, good = malicious_files(Path(tmp) / "bad"), clean_files(Path(tmp) / "good")
        versions = {}
        for name in SCANNERS:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = ""
        scanners = [n for n in SCANNERS if versions[n]]
        print("| file | expected | " + " | ".join(f"{n} {versions[n]}" for n in scanners) + " |")
        print("|---|---|" + "---|" * len(scanners))
        seconds = dict.fromkeys(scanners, 0.0)
        for expected, files in (("unsafe", bad), ("ok", good)):
            for label, path in files.items():
                cells = []
                for name in scanners:
                    started = time.perf_counter()
                    verdict = SCANNERS[name](path)
                    seconds[name] += time.perf_counter() - started
                    right = verdict == expected or (expected == "ok" and verdict == "skipped" and label == "config")
                    cells.append(verdict if right else f"**{verdict}**")
                print(f"| {label} (`{path.name}`) | {expected} | " + " | ".join(cells) + " |")
        print("\ntotal seconds: " + ", ".join(f"{n} {seconds[n]:.2f}" for n in scanners))


if __name__ == "__main__":
    main()
