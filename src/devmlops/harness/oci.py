"""A real OCI registry and cosign for the image signature tests: both built from the Go module proxy with
``go install`` (the distribution registry's ``cmd/registry`` and cosign's ``cmd/cosign``) into a versioned folder
outside the repository, ``~/.cache/devmlops/oci-tools/registry-<v>_cosign-<v>`` (about 3 min each on 2 cores, once;
harness/toolcache.py).

The registry serves on a free loopback port with filesystem storage; images are pushed with the registry's HTTP API
(a config blob, one small layer, an OCI manifest: enough for a signature, nothing runs them); cosign signs with a
key pair of its own, offline (no Fulcio, no Rekor: ``--use-signing-config=false --tlog-upload=false``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from devmlops.harness.processes import ManagedProcess, free_port
from devmlops.harness.toolcache import cache_root, go_install

__all__ = [
    "COSIGN_VERSION",
    "REGISTRY_VERSION",
    "cosign_attest",
    "cosign_import_key",
    "cosign_key_pair",
    "cosign_sign",
    "oci_registry",
    "oci_tools",
    "push_image",
    "registry_storage",
]

REGISTRY_VERSION = "v3.1.2"
COSIGN_VERSION = "v3.1.3"
_MODULES = {
    "registry": f"github.com/distribution/distribution/v3/cmd/registry@{REGISTRY_VERSION}",
    "cosign": f"github.com/sigstore/cosign/v3/cmd/cosign@{COSIGN_VERSION}",
}


def oci_tools(*needed: str, log: Callable[[str], None] = lambda _m: None) -> Path:
    """The folder holding ``registry`` and ``cosign`` (or only the ``needed`` ones), built with ``go install`` when
    missing."""
    folder = cache_root() / "oci-tools" / f"registry-{REGISTRY_VERSION}_cosign-{COSIGN_VERSION}"
    for binary, module in _MODULES.items():
        if not needed or binary in needed:
            go_install(module, folder / binary, log=log)
    return folder


@contextmanager
def oci_registry(
    workdir: Path, log: Callable[[str], None] = lambda _m: None, *, storage: Path | None = None, auth: str = ""
) -> Iterator[str]:
    """A distribution registry on 127.0.0.1; yields its ``host:port``. ``storage``: the folder of another registry's
    filesystem storage to serve too (a second registry over the same content, with other access rules); ``auth``:
    the YAML of its ``auth:`` section, indented by two spaces (htpasswd, token), or anonymous access."""
    tools = oci_tools("registry", log=log)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage or workdir / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        "log:\n  level: warn\n" + (f"auth:\n{auth}" if auth else "")
    )
    process = ManagedProcess(
        "registry", [str(tools / "registry"), "serve", str(config)], log_path=workdir / "registry.log"
    ).start()
    host = f"127.0.0.1:{port}"
    try:
        # /v2/ answers 401 to anonymous requests on a registry with auth: it is serving then.
        process.wait_until(lambda: _answers(f"http://{host}/v2/"), timeout=30, what="registry /v2/")
        yield host
    finally:
        process.stop()


def registry_storage(workdir: Path) -> Path:
    """The storage folder of the registry ``oci_registry(workdir)`` runs (for a second one over the same content)."""
    return workdir / "data"


def _answers(url: str) -> bool:
    """The server answered with 200 or 401."""
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


def _request(url: str, *, method: str, data: bytes = b"", content_type: str = "") -> urllib.request.Request:
    headers = {"Content-Type": content_type} if content_type else {}
    return urllib.request.Request(url, data=data or None, method=method, headers=headers)  # noqa: S310 - loopback


def _blob(host: str, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = _request(f"http://{host}/v2/{repository}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start) as started:  # noqa: S310 - loopback
        location = started.headers["Location"]
    location = location if location.startswith("http") else f"http://{host}{location}"
    separator = "&" if "?" in location else "?"
    put = _request(
        f"{location}{separator}digest={digest}", method="PUT", data=data, content_type="application/octet-stream"
    )
    urllib.request.urlopen(put).close()  # noqa: S310 - loopback
    return digest


def push_image(host: str, repository: str, tag: str, content: bytes) -> str:
    """Push a one-layer OCI image; returns ``host/repository@sha256:...``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _blob(host, repository, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": _blob(host, repository, content),
                "size": len(content),
            }
        ],
    }
    body = json.dumps(manifest).encode()
    put = _request(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        method="PUT",
        data=body,
        content_type="application/vnd.oci.image.manifest.v1+json",
    )
    with urllib.request.urlopen(put) as answer:  # noqa: S310 - loopback
        return f"{host}/{repository}@{answer.headers['Docker-Content-Digest']}"


def cosign_key_pair(directory: Path, stem: str) -> tuple[Path, Path]:
    """``(private key, public key PEM)`` from ``cosign generate-key-pair`` (empty password)."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COSIGN_PASSWORD": ""}
    subprocess.run(
        [str(oci_tools("cosign") / "cosign"), "generate-key-pair", "--output-key-prefix", stem],
        check=True, cwd=directory, env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    return directory / f"{stem}.key", directory / f"{stem}.pub"


def cosign_import_key(private_pem: Path, directory: Path, stem: str) -> Path:
    """A PKCS#8 PEM private key in cosign's own format (``cosign import-key-pair``, empty password): cosign signs
    only with that, and a certificate names the key it was issued for."""
    env = {**os.environ, "COSIGN_PASSWORD": ""}
    subprocess.run(
        [
            str(oci_tools("cosign") / "cosign"), "import-key-pair", "--key", str(private_pem),
            "--output-key-prefix", str(directory / stem),
        ],
        check=True, env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    return directory / f"{stem}.key"


def _cosign(command: str, key: Path, image: str, *options: str) -> None:
    """``cosign <command>`` over ``image`` with ``key``, offline; cosign attaches the bundle as an OCI referrer."""
    env = {**os.environ, "COSIGN_PASSWORD": ""}
    subprocess.run(
        [
            str(oci_tools("cosign") / "cosign"), command, "--key", str(key), *options, "--use-signing-config=false",
            "--tlog-upload=false", "--allow-http-registry", "--allow-insecure-registry", "--yes", image,
        ],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip


def cosign_sign(key: Path, image: str, *, certificate: Path | None = None, chain: Path | None = None) -> None:
    """Sign ``image`` (pinned by digest) with ``key``, offline; cosign attaches the bundle as an OCI referrer. With
    ``certificate`` (for ``key``) and ``chain`` (its intermediates), the bundle carries the certificate instead of a
    key hint."""
    certified = ["--certificate", str(certificate)] if certificate else []
    certified += ["--certificate-chain", str(chain)] if chain else []
    _cosign("sign", key, image, *certified)


def cosign_attest(key: Path, image: str, predicate: Path, predicate_type: str = "slsaprovenance1") -> None:
    """Attest ``image`` with ``key`` (an in-toto statement of ``predicate_type`` about it, not a signature of it),
    offline; cosign attaches the bundle as an OCI referrer, as it does a signature."""
    _cosign("attest", key, image, "--type", predicate_type, "--predicate", str(predicate))
