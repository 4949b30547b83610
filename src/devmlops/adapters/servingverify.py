"""What the serving pod needs to check that the bytes it loads are the bytes that were signed.

The operator writes a ``VerificationPlan`` (JSON) into the pod: the OMS bundles, the digest admission verified,
and the authorities (with thresholds) of the policies that admitted it. ``devmlops storage-initializer`` reads it,
verifies the bundles again (k of n authorities: one bundle each, all over the same manifest), fetches the model and
re-hashes every file once before the model server may start; when a policy requires scan evidence, it also scans
the files (``adapters/scan.py``) and refuses unsafe ones, so a model is scanned where it loads even if nobody
attested a scan. For a model MLServer serves behind the guard it refuses a ``settings.json`` at the model root:
MLServer would take its listening host from there over ``MLSERVER_HOST`` (docs/guard.md). When a policy restricts
``allow.formats``, it reads what the verified files make the server load (each Triton model's ``config.pbtxt`` or
model file names, MLServer's ``model-settings.json``: core/modelformats.py) and refuses a format none allows.
An OCI model in a private registry is pulled with the team's own credentials from its namespace, when it gives some
(``team_registry_auth``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from devmlops.adapters.modelverify import ByteCheck, check_model_bytes
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.registryauth import RegistryAuth
from devmlops.adapters.scan import scan_model
from devmlops.core.modelformats import (
    MAX_CONFIG_BYTES,
    MLSERVER_MODEL_SETTINGS,
    TRITON_CONFIG,
    FormatProblem,
    mlserver_problems,
    triton_problems,
)
from devmlops.core.plan import ENV_PLAN, VerificationPlan
from devmlops.core.ports import VerificationFailed
from devmlops.core.render import REGISTRY_AUTH_ENV, REGISTRY_AUTH_KEY, REGISTRY_SECRET
from devmlops.core.render import VERIFY_URI_PREFIX as PREFIX
from devmlops.errors import InvalidInputError

__all__ = [
    "ENV_PLAN",
    "MLSERVER_SETTINGS",
    "PREFIX",
    "VerificationPlan",
    "fetch_model",
    "run_plan",
    "team_registry_auth",
]

# MLServer's server settings, read from the root of the folder it serves, over its environment (MLSERVER_HOST).
MLSERVER_SETTINGS = "settings.json"


def fetch_model(uri: str, destination: Path) -> None:
    """Copy a local model (file:// or a path) or download with KServe's storage library when it is installed."""
    uri = uri.removeprefix(PREFIX)
    destination.mkdir(parents=True, exist_ok=True)
    local = Path(uri.removeprefix("file://")) if uri.startswith("file://") or uri.startswith("/") else None
    if local is not None:
        if not local.exists():
            raise InvalidInputError(f"model source {uri}: does not exist")
        if local.is_dir():
            # Entry by entry, never copytree(local, destination): that also copies the source folder's mode and times
            # onto ``destination``, and in a KServe Pod that is the root-owned kserve-provision-location emptyDir
            # on /mnt/models, which the initializer (65532) may write into but not chmod: EPERM, the Pod never serves.
            for entry in sorted(local.iterdir()):
                if entry.is_dir():
                    shutil.copytree(entry, destination / entry.name, dirs_exist_ok=True)
                else:
                    shutil.copy2(entry, destination / entry.name)
        else:
            shutil.copy2(local, destination / local.name)
        return
    if uri.startswith("oci://"):
        # An OCI artifact, by its manifest digest only (parse_model_uri refuses a tag); every blob checked.
        from devmlops.adapters.ociartifact import OciModel

        plain = [h for h in os.environ.get("DEVMLOPS_OCI_PLAIN_HTTP", "").split(",") if h]
        client = OciModel(plain_http=plain, auth=team_registry_auth())
        try:
            client.pull(uri, destination)
        finally:
            client.close()
        return
    try:
        from kserve_storage import Storage  # type: ignore[import-not-found]
    except ImportError as exc:
        raise InvalidInputError(
            f"model source {uri}: downloading needs the kserve-storage package (pip install 'devmlops[kserve]')"
        ) from exc
    Storage.download(uri, str(destination))


def team_registry_auth() -> RegistryAuth:
    """The team's own registry credentials: the ``.dockerconfigjson`` of the Secret ``REGISTRY_SECRET`` in the model's
    namespace, which the Pod gives this process as ``REGISTRY_AUTH_ENV`` when there is one (an optional secretKeyRef);
    none otherwise (anonymous pulls). They change who may read, never what is accepted: every byte is still checked
    against the digest and the signature."""
    source = f"the Secret {REGISTRY_SECRET} of the model's namespace ({REGISTRY_AUTH_ENV})"
    missing = (
        f"the model's namespace has no Secret {REGISTRY_SECRET} with a {REGISTRY_AUTH_KEY} for it: create one of type "
        'kubernetes.io/dockerconfigjson there with the team\'s credentials (docs/policies.md, "Private registries")'
    )
    return RegistryAuth.from_env(os.environ.get(REGISTRY_AUTH_ENV), source, missing=missing)


def run_plan(uri: str, destination: Path, plan: VerificationPlan, *, out: TextIO = sys.stdout) -> ByteCheck:
    """Fetch, verify the signature, re-hash the bytes, and scan them when the plan says so (a policy requires scan
    evidence). Raises VerificationFailed when anything differs or a file is unsafe."""
    signed = plan.verify_signature(OmsVerifier())
    if plan.mlserver_guarded:
        _no_server_settings(name.rsplit(":", 2)[0] for name, _digest in signed.files)  # before fetching anything
    fetch_model(uri, destination)
    if plan.mlserver_guarded:
        _no_server_settings(p.name for p in destination.iterdir() if p.name == MLSERVER_SETTINGS)
    check = check_model_bytes(destination, signed, progress=sys.stderr, strict=True)
    if not check.ok:
        raise VerificationFailed("the fetched model differs from its signature: " + "; ".join(check.problems[:10]))
    out.write(
        f"devmlops: {check.files} files of {signed.model_name} match {signed.digest} (signed by {signed.signer})\n"
    )
    if plan.formats is not None:
        _check_formats(destination, plan.runtime, plan.formats)
        out.write(f"devmlops: every model's format is one of {list(plan.formats)} ({plan.runtime})\n")
    if plan.scan:
        scan = scan_model(destination, digests=False)  # the bytes were just hashed against the signature
        if not scan.ok:
            raise VerificationFailed(
                "the signed model has files that run code when loaded (devmlops scan): "
                + "; ".join(scan.problems()[:5])
            )
        out.write(f"devmlops: scanned {scan.predicate()['summary']['filesScanned']} file(s): nothing unsafe\n")
    return check


def _no_server_settings(paths: Iterable[str]) -> None:
    """Refuse the model when one of its ``paths`` (relative to the model root) is MLServer's settings file there."""
    if MLSERVER_SETTINGS in set(paths):
        raise VerificationFailed(
            f"the model has a {MLSERVER_SETTINGS} at its root, which MLServer behind the guard would read as its "
            "server settings (its host over MLSERVER_HOST=127.0.0.1, opening the server around the guard); expected "
            "none: remove it from the model and sign again"
        )


def _check_formats(root: Path, runtime: str, allowed: tuple[str, ...]) -> None:
    """Refuse the model when its verified files make ``runtime`` load a format not ``allowed``, naming each file."""
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    configs = {path: _text(root, path) for path in paths if path.count("/") == 1 and _named(path, TRITON_CONFIG)}
    if runtime == "triton":
        problems = triton_problems(paths, configs, allowed)
    elif runtime == "kserve":
        # MLServer's model settings; a folder of Triton model configs is a repository KServe's Triton runtime serves.
        settings = {path: _text(root, path) for path in paths if _named(path, MLSERVER_MODEL_SETTINGS)}
        problems = mlserver_problems(settings, allowed) + (triton_problems(paths, configs, allowed) if configs else [])
    else:
        problems = [FormatProblem(".", f"runtime kind {runtime or 'none'} in the plan (expected triton or kserve)")]
    if problems:
        raise VerificationFailed(
            "the signed model is of a format no admitting policy allows (allow.formats): "
            + "; ".join(problem.describe(allowed) for problem in problems[:5])
        )


def _named(path: str, name: str) -> bool:
    return path.rsplit("/", 1)[-1] == name


def _text(root: Path, path: str) -> str:
    """A model config's text (``path`` relative to ``root``); one too large or not UTF-8 is refused."""
    if (root / path).stat().st_size > MAX_CONFIG_BYTES:
        raise VerificationFailed(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; expected a model config")
    try:
        return (root / path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationFailed(f"{path}: not UTF-8 text ({exc.reason}); expected a model config") from exc
