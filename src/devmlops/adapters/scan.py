"""``devmlops scan``: find model files that run code when they are loaded, with picklescan.

Pickle and the formats built on it (joblib, PyTorch's zip checkpoints, numpy ``.npy`` object arrays, zips and
``.npz`` of those) call any importable function named in the file while loading: ``os.system`` as easily as
``numpy.ndarray``. picklescan reads the pickle opcodes without executing them and names every global a file imports
(docs/evidence.md compares it with modelscan and fickling on the same malicious and clean files, and says why it was
chosen). Keras ``.keras`` archives carry Python code in Lambda layers; their ``config.json`` is read here (modelscan
needs TensorFlow installed to read the same file).

Verdicts per file: ``unsafe`` (a dangerous global, or one picklescan could not resolve), ``error`` (the scanner
could not read to the end: joblib's raw array bytes, a truncated file; whatever follows was not scanned, so it is
not known to be safe), ``suspicious`` (globals outside picklescan's safe list, such as a scikit-learn class: listed
for Rego to judge), ``clean``, or ``skipped`` (a format with no code in it that picklescan reads, such as JSON or
safetensors). A scan that finds nothing unsafe and no error is ``ok``.

Files are recognised by content as well as by name: a pickle of protocol 0 or 1 starts with an ordinary opcode, not
``\x80``, and loaders take any name (``finalized_model.sav``); a file whose first megabyte reads as pickle opcodes
(or that reaches STOP before) is scanned as one. gzip, bz2 and xz files (joblib and pandas decompress and unpickle
them) are scanned through their decompressed content; other compression is an ``error``. Zip archives are read
member by member with the same rules (picklescan alone looks only at members with pickle names).
"""

from __future__ import annotations

import bz2
import datetime as dt
import functools
import gzip
import hashlib
import importlib.metadata
import json
import logging
import lzma
import os
import pickletools
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from picklescan import scanner as picklescan

__all__ = ["FileScan", "ModelScan", "scan_model"]

_PICKLE_EXTENSIONS = {".pkl", ".pickle", ".joblib", ".dat", ".data", ".bin", ".pt", ".pth", ".ckpt", ".npy", ".npz"}
_ZIP_EXTENSIONS = {".zip", ".7z", ".mar"}
_PICKLE_PROTOCOL_2_AND_LATER = b"\x80"
_ZIP_MAGIC = b"PK\x03\x04"
_OPENERS: dict[bytes, Any] = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
# Compression a loader may undo that is not read here: zlib (joblib), lz4 (joblib), zstd.
_UNREAD_COMPRESSION = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x04\x22\x4d\x18", b"\x28\xb5\x2f\xfd")
_SNIFF_BYTES = 1 << 20  # pickle opcodes read to tell a pickle by its content
_KERAS_CODE_LAYERS = {"Lambda", "TFOpLambda"}
_MAX_KERAS_CONFIG = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileScan:
    path: str
    status: str  # clean | unsafe | suspicious | error | skipped
    digest: str = ""
    findings: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelScan:
    root: str
    files: tuple[FileScan, ...]
    scanner_version: str
    seconds: float = 0.0
    bytes: int = 0
    timestamp: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def ok(self) -> bool:
        return self.count("unsafe") == 0 and self.count("error") == 0

    def problems(self) -> list[str]:
        return [
            f"{f.path}: {f.status}: " + "; ".join(x["description"] for x in f.findings[:3])
            for f in self.files
            if f.status in ("unsafe", "error")
        ]

    def predicate(self) -> dict[str, Any]:
        """The ``https://devmlops.io/attestation/scan/v1`` predicate (resources/attestation/scan-v1.schema.json)."""
        files = []
        for f in self.files:
            entry: dict[str, Any] = {"path": f.path, "status": f.status}
            if f.digest:
                entry["digest"] = f.digest
            if f.findings:
                entry["findings"] = [dict(x) for x in f.findings]
            files.append(entry)
        return {
            "timestamp": self.timestamp,
            "scanner": {"name": "picklescan", "version": self.scanner_version},
            "summary": {
                "filesScanned": sum(1 for f in self.files if f.status != "skipped"),
                "unsafe": self.count("unsafe"),
                "suspicious": self.count("suspicious"),
                "errors": self.count("error"),
                "skipped": self.count("skipped"),
            },
            "files": files,
        }


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    if root.is_file():
        yield root.name, root
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            yield path.relative_to(root).as_posix(), path


def _magic(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(4)


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def _keras(relative: str, path: Path, digest: str) -> FileScan:
    """Lambda layers in a ``.keras`` archive's config.json: Python code that runs when the model is loaded."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > _MAX_KERAS_CONFIG:
                raise ValueError(f"config.json is {info.file_size} bytes")
            config = json.loads(archive.read(info))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RecursionError) as exc:
        finding = {"severity": "error", "description": f"not a readable Keras archive ({type(exc).__name__}: {exc})"}
        return FileScan(relative, "error", digest, (finding,))
    found = []
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") in _KERAS_CODE_LAYERS:
                name = (node.get("config") or {}).get("name", "?") if isinstance(node.get("config"), dict) else "?"
                found.append(
                    {
                        "severity": "unsafe",
                        "description": f"Keras {node['class_name']} layer '{name}' runs Python code when loaded",
                        "global": f"keras.layers.{node['class_name']}",
                    }
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return FileScan(relative, "unsafe" if found else "clean", digest, tuple(found[:1000]))


class _Capped:
    """A reader that gives at most ``budget`` bytes of ``handle``, and says whether it ran out."""

    def __init__(self, handle: IO[bytes], budget: int) -> None:
        self._handle, self._left, self.exhausted = handle, budget, False

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(wanted) if wanted > 0 else b""
        self._left -= len(data)
        if self._left <= 0 and (size < 0 or len(data) < size):
            self.exhausted = True
        return data

    def readline(self) -> bytes:
        data = self._handle.readline(max(self._left, 0))
        self._left -= len(data)
        if self._left <= 0:
            self.exhausted = True
        return data


def _reads_as_pickle(handle: IO[bytes]) -> bool:
    """Whether ``handle`` starts as a pickle of any protocol: its opcodes parse to STOP, or for a whole megabyte."""
    capped = _Capped(handle, _SNIFF_BYTES)
    try:
        for opcode, _arg, _position in pickletools.genops(cast(IO[bytes], capped)):
            if opcode.name == "STOP":
                return True
    except Exception:
        return capped.exhausted  # opcodes all the way to the sniffing limit: a pickle too long to finish here
    return False


def _verdict(relative: str, result: Any, digest: str) -> FileScan:
    findings = []
    status = "clean"
    for g in sorted(result.globals, key=lambda g: (g.module, g.name)):
        if g.safety == picklescan.SafetyLevel.Dangerous:
            status = "unsafe"
            findings.append(
                {
                    "severity": "unsafe",
                    "description": f"imports {g.module}.{g.name}, which can run code when loaded",
                    "global": f"{g.module}.{g.name}",
                }
            )
        elif g.safety == picklescan.SafetyLevel.Suspicious:
            findings.append(
                {
                    "severity": "suspicious",
                    "description": f"imports {g.module}.{g.name}",
                    "global": f"{g.module}.{g.name}",
                }
            )
    if result.scan_err and status != "unsafe":
        status = "error"
        findings.append(
            {
                "severity": "error",
                "description": "the scanner could not read the file to its end (raw array data, a truncated or "
                "unknown format): what follows was not scanned",
            }
        )
    if status == "clean" and any(f["severity"] == "suspicious" for f in findings):
        status = "suspicious"
    return FileScan(relative, status, digest, tuple(findings[:1000]))


def _pickle(relative: str, path: Path, digest: str) -> FileScan:
    return _verdict(relative, picklescan.scan_file_path(str(path)), digest)


def _error(relative: str, digest: str, description: str) -> FileScan:
    return FileScan(relative, "error", digest, ({"severity": "error", "description": description},))


def _merge(relative: str, digest: str, parts: list[FileScan]) -> FileScan:
    """One verdict for a file from the verdicts of its members: the worst, with every finding."""
    order = ("unsafe", "error", "suspicious", "clean", "skipped")
    status = min((part.status for part in parts), key=order.index, default="clean")
    findings = tuple(f for part in parts for f in part.findings)[:1000]
    return FileScan(relative, "clean" if status == "skipped" else status, digest, findings)


def _stream(relative: str, open_stream: Callable[[], IO[bytes]], name: str) -> FileScan:
    """A zip member or a decompressed stream (``open_stream`` opens it afresh, from its start): scanned as a pickle
    when its name or its content says it is one."""
    with open_stream() as handle:
        head = handle.read(6)
    with open_stream() as handle:
        pickled = (
            Path(name).suffix.lower() in _PICKLE_EXTENSIONS
            or head.startswith(_PICKLE_PROTOCOL_2_AND_LATER)
            or _reads_as_pickle(handle)
        )
    if pickled:
        with open_stream() as handle:
            return _verdict(relative, picklescan.scan_pickle_bytes(handle, relative), "")
    if head.startswith((_ZIP_MAGIC, *_OPENERS, *_UNREAD_COMPRESSION)):
        return _error(relative, "", f"{name}: an archive or compressed stream inside another is not scanned")
    return FileScan(relative, "skipped")


def _archive(relative: str, path: Path, digest: str) -> FileScan:
    try:
        with zipfile.ZipFile(path) as archive:
            parts = []
            for info in archive.infolist():
                if info.is_dir():
                    continue
                member = functools.partial(archive.open, info)
                parts.append(_stream(f"{relative}:{info.filename}", member, info.filename))
    except (OSError, ValueError, zipfile.BadZipFile, RuntimeError) as exc:  # encrypted members raise RuntimeError
        return _error(relative, digest, f"not a readable zip archive ({type(exc).__name__}: {exc})")
    return _merge(relative, digest, parts)


def _compressed(relative: str, path: Path, digest: str, opener: Any) -> FileScan:
    inner = path.stem  # model.pkl.gz -> model.pkl
    try:
        return _merge(relative, digest, [_stream(relative, functools.partial(opener, path, "rb"), inner)])
    except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
        return _error(relative, digest, f"a compressed file that does not decompress ({type(exc).__name__})")


def scan_file(relative: str, path: Path, *, digests: bool = True) -> tuple[FileScan, int]:
    """One file's verdict and its size (and its SHA-256 for the predicate unless ``digests`` is off)."""
    digest, size = _sha256(path) if digests else ("", path.stat().st_size)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return _keras(relative, path, digest), size
    with path.open("rb") as handle:
        magic = handle.read(6)
    for start, opener in _OPENERS.items():
        if magic.startswith(start):
            return _compressed(relative, path, digest, opener), size
    if magic.startswith(_UNREAD_COMPRESSION):
        return _error(relative, digest, "compressed with a codec devmlops does not read (zlib, lz4, zstd)"), size
    if magic.startswith(_ZIP_MAGIC) or suffix in _ZIP_EXTENSIONS:
        return (
            _archive(relative, path, digest) if magic.startswith(_ZIP_MAGIC) else _pickle(relative, path, digest)
        ), size
    if suffix in _PICKLE_EXTENSIONS or magic.startswith(_PICKLE_PROTOCOL_2_AND_LATER):
        return _pickle(relative, path, digest), size
    with path.open("rb") as handle:
        if _reads_as_pickle(handle):
            return _pickle(relative, path, digest), size
    return FileScan(relative, "skipped", digest), size


def scan_model(root: Path, *, digests: bool = True) -> ModelScan:
    """Scan a model file or every file under a model folder (symbolic links are not followed). ``digests=False``
    leaves out each file's SHA-256 (the storage initializer has just checked every byte against the signature)."""
    import time

    started = time.perf_counter()
    logging.getLogger("picklescan").setLevel(logging.ERROR)  # each finding is in the result; no second report
    results, total = [], 0
    for relative, path in _files(root):
        if path.is_symlink():
            finding = {"severity": "error", "description": "a symbolic link: its target is not part of the model"}
            results.append(FileScan(relative, "error", "", (finding,)))
            continue
        result, size = scan_file(relative, path, digests=digests)
        results.append(result)
        total += size
    return ModelScan(
        root=str(root),
        files=tuple(results),
        scanner_version=importlib.metadata.version("picklescan"),
        seconds=time.perf_counter() - started,
        bytes=total,
    )
