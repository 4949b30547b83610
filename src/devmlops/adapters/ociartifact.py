"""Models stored as OCI artifacts (``oci://host/repository@sha256:...``), in ORAS's layout: one layer per file,
named by its ``org.opencontainers.image.title`` annotation. Pulled by manifest digest only (every blob checked
against its digest while it is written), and their OMS signature attached as an OCI referrer: a manifest whose
subject is the model's manifest, ``artifactType`` the Sigstore bundle type, annotation
``dev.sigstore.bundle.predicateType: https://model_signing/signature/v1.0``, one layer holding the bundle (what
``devmlops sign --oci`` pushes and the webhook reads, ``adapters/ocisig.py``).

Registries are reached over HTTPS, or plain HTTP for the hosts given (loopback in tests). Pulls use the credentials
of ``auth`` (Basic or the token flow, ``adapters/registryauth.py``): in the storage initializer, a team's own Secret
in its model's namespace, never the admin's (docs/policies.md, "Private registries"); credentials change who may
read, never what is accepted: the manifest must hash to the digest and every blob to its own. Pushes are anonymous
(a registry that asks for credentials is an error saying so).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from devmlops.adapters.ocisig import BUNDLE_TYPE, OMS_PREDICATE, PREDICATE_ANNOTATION
from devmlops.adapters.registryauth import RegistryAuth, RegistryAuthError, check_realm
from devmlops.errors import InvalidInputError

__all__ = ["MODEL_ARTIFACT_TYPE", "OciModel", "parse_model_uri"]

MODEL_ARTIFACT_TYPE = "application/vnd.devmlops.model.v1"
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_EMPTY = b"{}"
_TITLE = "org.opencontainers.image.title"
_MAX_TOKEN_ANSWER = 64 * 1024  # a token server's answer, read no further


def _anonymous_only(answer: httpx.Response, what: str) -> str:
    """Why a registry's 401 stops a push: this client pushes anonymously."""
    challenge = answer.headers.get("WWW-Authenticate", "") or "no WWW-Authenticate header"
    return (
        f"{what}: registry {answer.request.url.netloc.decode()} requires credentials (HTTP 401, {challenge[:200]}); "
        "devmlops pushes OCI models anonymously: push with your registry's own tooling"
    )


def parse_model_uri(uri: str) -> tuple[str, str, str]:
    """``(host, repository, sha256:digest)`` of ``oci://host/repository@sha256:...``."""
    rest = uri.removeprefix("devmlops+").removeprefix("oci://")
    name, _, digest = rest.partition("@")
    host, _, repository = name.partition("/")
    if not uri.removeprefix("devmlops+").startswith("oci://") or not repository or not digest.startswith("sha256:"):
        raise InvalidInputError(f"model source {uri}: expected oci://host/repository@sha256:<digest>")
    return host, repository, digest


class OciModel:
    """Push, pull and attach signatures to model artifacts in one registry."""

    def __init__(
        self, *, plain_http: Sequence[str] = (), timeout: float = 30.0, auth: RegistryAuth | None = None
    ) -> None:
        self._plain = frozenset(plain_http)
        self._auth = auth if auth is not None else RegistryAuth()
        self._http = httpx.Client(timeout=timeout, follow_redirects=True)

    def _url(self, host: str, path: str) -> str:
        return f"{'http' if host in self._plain else 'https'}://{host}/v2/{path}"

    def _pull(self, host: str, repository: str, path: str, what: str, accept: str = "") -> httpx.Response:
        """A streamed GET of ``/v2/<repository>/<path>`` with ``auth``'s credentials for pulling (a 401 answered once);
        the caller closes it. ``InvalidInputError`` naming ``what`` and the registry when it still refuses."""

        def ask(authorization: Mapping[str, str]) -> httpx.Response:
            headers = {**({"Accept": accept} if accept else {}), **authorization}
            request = self._http.build_request("GET", self._url(host, f"{repository}/{path}"), headers=headers)
            return self._http.send(request, stream=True)

        def fetch(method: str, url: str, headers: Mapping[str, str], content: bytes) -> tuple[int, bytes]:
            check_realm(host, url, self._plain)
            with self._http.stream(method, url, headers=dict(headers), content=content or None) as answer:
                body = b""
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_TOKEN_ANSWER:
                        raise RegistryAuthError(
                            f"registry {host}: its token server sent more than {_MAX_TOKEN_ANSWER} bytes"
                        )
                return answer.status_code, body

        try:
            return self._auth.send(
                host,
                f"repository:{repository}:pull",
                ask,
                lambda answer: (answer.status_code, answer.headers.get("WWW-Authenticate", "")),
                fetch,
                discard=lambda answer: answer.close(),
            )
        except RegistryAuthError as exc:
            raise InvalidInputError(f"{what}: {exc}") from None

    def _check(self, answer: httpx.Response, what: str) -> httpx.Response:
        if answer.status_code == 401:
            raise InvalidInputError(_anonymous_only(answer, what))
        if answer.status_code >= 300:
            raise InvalidInputError(f"{what}: HTTP {answer.status_code} {answer.text[:200]}")
        return answer

    def _blob(self, host: str, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = self._check(self._http.post(self._url(host, f"{repository}/blobs/uploads/")), "blob upload")
        location = started.headers["Location"]
        location = location if location.startswith("http") else self._url(host, "").removesuffix("/v2/") + location
        separator = "&" if "?" in location else "?"  # the upload URL carries its own state: keep it
        put = self._http.put(
            f"{location}{separator}digest={digest}", content=data, headers={"Content-Type": "application/octet-stream"}
        )
        self._check(put, f"blob {digest}")
        return digest

    def _manifest(self, host: str, repository: str, reference: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest).encode()
        answer = self._http.put(
            self._url(host, f"{repository}/manifests/{reference}"), content=body, headers={"Content-Type": _MANIFEST}
        )
        return str(self._check(answer, f"manifest {reference}").headers["Docker-Content-Digest"])

    def push(self, host: str, repository: str, tag: str, files: Path) -> str:
        """Push the files of the folder ``files`` as a model artifact; returns ``oci://host/repository@sha256:...``."""
        layers = []
        for path in sorted(p for p in files.rglob("*") if p.is_file()):
            data = path.read_bytes()
            layers.append(
                {
                    "mediaType": "application/octet-stream",
                    "digest": self._blob(host, repository, data),
                    "size": len(data),
                    "annotations": {_TITLE: path.relative_to(files).as_posix()},
                }
            )
        manifest = {
            "schemaVersion": 2,
            "mediaType": _MANIFEST,
            "artifactType": MODEL_ARTIFACT_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": self._blob(host, repository, _EMPTY),
                "size": 2,
            },
            "layers": layers,
        }
        return f"oci://{host}/{repository}@{self._manifest(host, repository, tag, manifest)}"

    def attach_signature(self, uri: str, bundle: str) -> str:
        """Attach an OMS bundle to the model ``uri`` as a referrer (the referrers tag too, for registries without
        the referrers API); returns the referrer manifest's digest."""
        host, repository, digest = parse_model_uri(uri)
        subject = self._check(
            self._http.get(self._url(host, f"{repository}/manifests/{digest}"), headers={"Accept": _MANIFEST}),
            f"model manifest {digest}",
        )
        data = bundle.encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": _MANIFEST,
            "artifactType": BUNDLE_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": self._blob(host, repository, _EMPTY),
                "size": 2,
            },
            "layers": [{"mediaType": BUNDLE_TYPE, "digest": self._blob(host, repository, data), "size": len(data)}],
            "subject": {"mediaType": _MANIFEST, "digest": digest, "size": len(subject.content)},
            "annotations": {PREDICATE_ANNOTATION: OMS_PREDICATE},
        }
        body = json.dumps(manifest).encode()
        referrer = "sha256:" + hashlib.sha256(body).hexdigest()
        self._manifest(host, repository, referrer, manifest)
        self._tag_referrer(host, repository, digest, {**manifest}, referrer, len(body))
        return referrer

    def _tag_referrer(
        self, host: str, repository: str, subject: str, manifest: dict[str, Any], digest: str, size: int
    ) -> None:
        """The OCI 1.1 fallback: an index tagged ``sha256-<hex>`` listing the subject's referrers."""
        tag = subject.replace(":", "-")
        index_type = "application/vnd.oci.image.index.v1+json"
        found = self._http.get(self._url(host, f"{repository}/manifests/{tag}"), headers={"Accept": index_type})
        entries = (found.json().get("manifests") or []) if found.status_code == 200 else []
        entry = {"mediaType": _MANIFEST, "digest": digest, "size": size, "artifactType": manifest["artifactType"]}
        index = {"schemaVersion": 2, "mediaType": index_type, "manifests": [*entries, entry]}
        answer = self._http.put(
            self._url(host, f"{repository}/manifests/{tag}"),
            content=json.dumps(index).encode(),
            headers={"Content-Type": index_type},
        )
        self._check(answer, f"referrers tag {tag}")

    def pull(self, uri: str, destination: Path) -> list[str]:
        """Write the artifact's files under ``destination``, each blob checked against its digest; returns the
        relative paths written. Only a digest names what is pulled."""
        host, repository, digest = parse_model_uri(uri)
        answer = self._pull(host, repository, f"manifests/{digest}", f"model manifest {digest}", _MANIFEST)
        try:
            answer.read()
        finally:
            answer.close()
        self._check(answer, f"model manifest {digest}")
        if "sha256:" + hashlib.sha256(answer.content).hexdigest() != digest:
            raise InvalidInputError(f"model source {uri}: the manifest does not hash to {digest}")
        written = []
        for layer in answer.json().get("layers") or []:
            title = str((layer.get("annotations") or {}).get(_TITLE) or "")
            relative = PurePosixPath(title)
            if not title or relative.is_absolute() or ".." in relative.parts:
                raise InvalidInputError(
                    f"model source {uri}: layer {layer.get('digest')} has no safe title ({title!r})"
                )
            target = destination / Path(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._pull_blob(host, repository, str(layer.get("digest")), target)
            written.append(relative.as_posix())
        return written

    def _pull_blob(self, host: str, repository: str, digest: str, target: Path) -> None:
        hashing = hashlib.sha256()
        with contextlib.closing(self._pull(host, repository, f"blobs/{digest}", f"blob {digest}")) as answer:
            if answer.status_code != 200:
                raise InvalidInputError(f"blob {digest}: HTTP {answer.status_code}")
            with target.open("wb") as out:
                for chunk in answer.iter_bytes():
                    hashing.update(chunk)
                    out.write(chunk)
        if "sha256:" + hashing.hexdigest() != digest:
            target.unlink()
            raise InvalidInputError(f"blob {digest}: the bytes received hash to sha256:{hashing.hexdigest()}")

    def close(self) -> None:
        self._http.close()
