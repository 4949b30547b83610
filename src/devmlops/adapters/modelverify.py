"""Bytes served == bytes signed: hash a model folder the way its signer did and compare with the signed manifest.

The signature itself is verified by ``OmsVerifier`` (the same code as admission); the files are hashed with
``model_signing``'s public hashing API, in parallel across files, with the signer's serialization (files or
shards, sha256/blake2/blake3, ignore paths). Progress on a terminal is read from the bytes this process has read
(``/proc/self/io``), so it needs no hook into the library.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from model_signing import hashing

from devmlops.core.ports import SignedModel, VerificationFailed
from devmlops.errors import InvalidInputError

__all__ = ["ByteCheck", "check_model_bytes"]


@dataclass(frozen=True, slots=True)
class ByteCheck:
    files: int
    bytes: int
    seconds: float
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def _hashing_config(serialization: Mapping[str, Any], ignore: list[str], workers: int) -> Any:
    method = serialization.get("method", "files")
    common: dict[str, Any] = {
        "hashing_algorithm": serialization.get("hash_type", "sha256"),
        "allow_symlinks": bool(serialization.get("allow_symlinks", False)),
        "max_workers": workers,
    }
    config = hashing.Config()
    if method == "files":
        config = config.use_file_serialization(**common)
    elif method == "shards":
        config = config.use_shard_serialization(shard_size=int(serialization["shard_size"]), **common)
    else:
        raise VerificationFailed(f"signed serialization method: got {method!r}, expected files or shards")
    return config.set_ignored_paths(paths=ignore, ignore_git_paths=True)


def _read_bytes() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _Progress:
    """A one-line progress meter on a terminal; silent otherwise."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._total, self._stream = max(total, 1), stream
        self._start_bytes = _read_bytes()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Progress:
        if self._stream.isatty():
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self._stream.write("\n")

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            elapsed = time.monotonic() - self._started
            now = _read_bytes()
            if now is not None and self._start_bytes is not None:
                done = min(now - self._start_bytes, self._total)
                rate = done / elapsed / 2**20 if elapsed else 0.0
                share = 100 * done / self._total
                text = (
                    f"hashing: {done / 2**20:,.0f} / {self._total / 2**20:,.0f} MiB ({share:.0f}%), {rate:,.0f} MiB/s"
                )
            else:
                text = f"hashing {self._total / 2**20:,.0f} MiB: {elapsed:.0f}s"
            self._stream.write("\r" + text.ljust(72))
            self._stream.flush()


def check_model_bytes(
    model_path: Path,
    signed: SignedModel,
    *,
    ignore_paths: Iterable[str] = (),
    workers: int | None = None,
    progress: TextIO | None = None,
    strict: bool = False,
) -> ByteCheck:
    """Compare the files under ``model_path`` with ``signed`` (extra, missing and changed files are problems).
    ``strict``: a file the hashing left out (git paths, which model_signing always ignores, and the signature's
    ignored paths) is a problem too. Where the bytes are served, everything in the folder must be signed: a model
    server loads what it finds (Triton takes any folder of its repository as a model, ``.github`` included)."""
    if not model_path.is_dir() and not model_path.is_file():
        raise InvalidInputError(f"MODEL_PATH: {model_path} does not exist")
    present, unreadable = _served_entries(model_path) if strict and model_path.is_dir() else (set(), [])
    if unreadable:  # the hashing would step over (or stop at) what the server may still read
        return ByteCheck(files=0, bytes=0, seconds=0.0, problems=tuple(unreadable))
    ignore = [str(p) for p in signed.serialization.get("ignore_paths", [])] + [str(p) for p in ignore_paths]
    config = _hashing_config(signed.serialization, ignore, workers or os.cpu_count() or 1)
    total = (
        sum(p.stat().st_size for p in model_path.rglob("*") if p.is_file())
        if model_path.is_dir()
        else (model_path.stat().st_size)
    )
    started = time.perf_counter()
    with _Progress(total, progress or sys.stderr) if progress is not None else _nullcontext():
        try:
            actual = config.hash(model_path)
        except ValueError as exc:
            raise VerificationFailed(f"the model folder cannot be hashed as signed: {exc}") from exc
    seconds = time.perf_counter() - started
    found = {d.identifier: f"{d.digest.algorithm}:{d.digest.digest_hex}" for d in actual.resource_descriptors()}
    expected = dict(signed.files)
    problems = [f"unsigned file present: {name}" for name in sorted(set(found) - set(expected))]
    if strict and model_path.is_dir():
        # A sharded manifest names shards ('path:start:end'): the file hashed is the path before the range.
        sharded = signed.serialization.get("method") == "shards"
        hashed = {name.rsplit(":", 2)[0] if sharded else name for name in found}
        problems += [f"file not covered by the signature (left out of hashing): {name}" for name in sorted(
            present - hashed)]  # fmt: skip
    problems += [f"signed file missing: {name}" for name in sorted(set(expected) - set(found))]
    problems += [
        f"{name}: got {found[name][:23]}..., signed {expected[name][:23]}..."
        for name in sorted(set(found) & set(expected))
        if found[name] != expected[name]
    ]
    return ByteCheck(files=len(found), bytes=total, seconds=seconds, problems=tuple(problems))


def _served_entries(root: Path) -> tuple[set[str], list[str]]:
    """The files under ``root`` (relative names), and why the folder cannot be served as the verifier sees it: an
    entry it may not read, a symlink, anything but regular files and directories. The verifier owns what it fetched
    and the model server runs as another user, so a directory of mode 0o005 (no rights for its owner) is one the
    server lists and the verifier does not: ``pathlib.glob``, which model_signing walks with, skips it without a word.
    A symlink is resolved by the server in its own file system, not the one that was verified."""
    files: set[str] = set()
    problems: dict[str, str] = {}
    expected = "expected regular files and directories the storage initializer can read"

    def unreadable(relative: str, error: OSError) -> None:
        reason = f"{relative}: cannot be read by the verifier ({error.strerror}), but the model server may; {expected}"
        problems.setdefault(relative, reason)

    def walk_error(error: OSError) -> None:
        unreadable(Path(str(error.filename)).relative_to(root).as_posix(), error)

    for folder, directories, names in os.walk(root, onerror=walk_error):
        for name in sorted(directories + names):
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            try:
                mode = path.lstat().st_mode
            except OSError as exc:
                unreadable(relative, exc)
                continue
            wanted = os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)
            if stat.S_ISLNK(mode):
                problems[relative] = f"{relative}: a symlink (to {os.readlink(path)!r}); {expected}"
            elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                problems[relative] = f"{relative}: neither a file nor a directory; {expected}"
            elif not os.access(path, wanted):
                unreadable(relative, PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path)))
            elif stat.S_ISREG(mode):
                files.add(relative)
    return files, [problems[name] for name in sorted(problems)]


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        return None
