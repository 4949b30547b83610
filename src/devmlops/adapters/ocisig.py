"""Runtime image signatures: the Sigstore bundles cosign attaches to an image as OCI referrers, fetched from the
image's registry and verified for a policy's authorities (keys, certificate chains, keyless identities); and the
digest a tag names now, for the mutating webhook that pins tags.

What cosign v3 writes (checked with cosign 3.1.3 and the distribution registry 3.1.2): a manifest with
``artifactType: application/vnd.dev.sigstore.bundle.v0.3+json`` whose ``subject`` is the image manifest and whose
one layer is the bundle: a DSSE envelope (``application/vnd.in-toto+json``) over an in-toto statement whose subject
digest is the image's, predicate ``https://sigstore.dev/cosign/sign/v1``; with offline key signing the bundle has a
public-key hint and no transparency log entries. sigstore-python 4.5 refuses bundles without tlog entries and has no
OCI client, so this module verifies the envelope itself: ECDSA P-256/SHA-256 over DSSE's pre-authentication
encoding (``DSSEv1 <len> <type> <len> <payload>``) with ``cryptography``, then the statement's predicate type (only
cosign's sign predicate: ``cosign attest`` puts provenance or scan results about an image in the same kind of bundle,
with the same key, and those say nothing about releasing it) and its subject against the digest. A bundle signed with
``--certificate``/``--certificate-chain`` (or keyless, with Fulcio and Rekor) carries the signing certificate instead;
such bundles are verified by the signature verifier like any attestation (model_signing's chain check against the
authority's roots; sigstore-python for keyless), and then the statement's predicate type and subject the same way.
Referrers are listed through the OCI 1.1 referrers API, or the referrers tag (``sha256-<hex>``) where the registry
has no such API (distribution 3.1.2 answers 404 and cosign writes the tag).

Registries are reached over HTTPS, or plain HTTP for the hosts the cluster admins list (``--oci-plain-http``,
loopback registries in tests); with the credentials the admin gives for a registry (``--registry-auth-file``, Basic
or the distribution token flow: adapters/registryauth.py), anonymously for the others (a registry that asks for
credentials devmlops has not, or refuses them, is a failure to check, which denies, naming the registry). Every
read is bounded in size; each lookup has a deadline for all of it (every request and byte, a token request too: a
slow registry, whoever names it, holds a shared worker no longer); the bundles of an image digest are kept
for a short time (a signature attached later is seen after it), and verifying them again (ECDSA) costs microseconds.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.registryauth import Fetch, RegistryAuth, RegistryAuthError, check_realm
from devmlops.core.evidence import ImageSignatures
from devmlops.core.pinning import Reference
from devmlops.core.policy import Authority
from devmlops.core.ports import SignatureVerifier, VerificationFailed

if TYPE_CHECKING:
    import httpx

__all__ = [
    "BUNDLE_TYPE",
    "COSIGN_SIGN_PREDICATE",
    "OMS_PREDICATE",
    "PREDICATE_ANNOTATION",
    "ImageSignatureChecker",
    "OciClient",
    "OciError",
    "SignatureInvalid",
    "parse_image",
    "verify_bundle",
]

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
OMS_PREDICATE = "https://model_signing/signature/v1.0"  # an OpenSSF model signature
# What `cosign sign` states; `cosign attest` signs statements of other types (provenance, scans) with the same key.
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
_INDEX = "application/vnd.oci.image.index.v1+json"
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_ACCEPT_ANY_MANIFEST = ", ".join(
    (
        _MANIFEST,
        _INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_MAX_BYTES = 256 * 1024  # a bundle, a manifest or a referrers index is a few KiB
_MAX_REFERRERS = 16
_T = TypeVar("_T")


class SignatureInvalid(Exception):
    """A bundle that does not verify (deterministic): the reason names what is wrong."""


class OciError(Exception):
    """Signatures of an OCI artifact could not be read (its reference, the registry): the reason, for a denial."""


class RegistryUnreachable(Exception):
    """The registry could not be asked (network, status, size, credentials): never a verdict on the image."""


def parse_image(image: str) -> tuple[str, str, str]:
    """``(registry host, repository, sha256:digest)`` of ``repo@sha256:...`` (Docker Hub's defaults applied)."""
    name, _, digest = image.partition("@")
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise SignatureInvalid(f"'{image}' is not pinned by a sha256 digest")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = "registry-1.docker.io", name if rest else f"library/{name}"
    repository = repository.split(":", 1)[0]  # a tag beside the digest names nothing: the digest decides
    return host, repository, digest


class OciClient:
    """Reads of manifests and blobs; ``plain_http`` hosts over HTTP, every other one over HTTPS; with the
    credentials of ``auth`` for the registries it names (Basic or the token flow), anonymously for the others."""

    def __init__(
        self, *, plain_http: Sequence[str] = (), timeout: float = 2.0, auth: RegistryAuth | None = None
    ) -> None:
        self._plain = frozenset(plain_http)
        self._timeout = timeout
        self._auth = auth if auth is not None else RegistryAuth()
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._local = threading.local()  # the deadline of the lookup this thread runs

    def _http(self) -> httpx.Client:
        """The HTTP client, made with the first registry request. Importing httpx imports its command line's
        libraries too (rich, pygments, click: about 10 MiB more in a webhook worker, measured), which a worker that
        never reads a registry should not carry."""
        with self._client_lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(timeout=self._timeout, follow_redirects=True)
            return self._client

    @contextlib.contextmanager
    def _lookup(self) -> Iterator[None]:
        """One lookup (every request it makes, every byte it reads, a token request too) within ``timeout`` seconds.
        httpx's timeout bounds each wait for the next bytes, not a read: a registry that sent a byte a second held the
        caller's thread for days, and the host is whatever a ModelDeployment names (its workers are shared by every
        team)."""
        self._local.deadline = time.monotonic() + self._timeout
        try:
            yield
        finally:
            self._local.deadline = None

    def _remaining(self, host: str) -> float:
        """Seconds left of this thread's lookup; ``RegistryUnreachable`` once it is past its deadline."""
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return self._timeout
        remaining = float(deadline - time.monotonic())
        if remaining <= 0:
            raise RegistryUnreachable(f"{host}: no complete answer within the lookup's deadline of {self._timeout:g}s")
        return remaining

    def _get(self, host: str, repository: str, path: str, accept: str) -> tuple[int, bytes]:
        status, body, _digest = self._read(host, repository, path, accept)
        return status, body

    def _read(self, host: str, repository: str, path: str, accept: str) -> tuple[int, bytes, str]:
        """Status, body (at most ``_MAX_BYTES``) and the ``Docker-Content-Digest`` header ("" when absent) of
        ``/v2/<repository>/<path>``; a 401 is answered once with credentials (or a token) for pulling
        ``repository``, and a registry that still refuses is ``RegistryUnreachable`` naming it and its answer."""
        scheme = "http" if host in self._plain else "https"
        url, scope = f"{scheme}://{host}/v2/{repository}/{path}", f"repository:{repository}:pull"
        try:
            status, body, answer = self._auth.send(
                host,
                scope,
                lambda authorization: self._stream("GET", url, {"Accept": accept, **authorization}, b"", host),
                lambda sent: (sent[0], sent[2].get("WWW-Authenticate", "")),
                self._token_fetch(host),
            )
        except RegistryAuthError as exc:
            raise RegistryUnreachable(str(exc)) from None
        return status, body, answer.get("Docker-Content-Digest", "")

    def _stream(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes, host: str
    ) -> tuple[int, bytes, httpx.Headers]:
        """One request within what is left of the lookup's deadline; at most ``_MAX_BYTES`` of answer."""
        import httpx

        timeout = httpx.Timeout(self._remaining(host))
        http = self._http()
        try:
            with http.stream(method, url, headers=headers, content=content or None, timeout=timeout) as answer:
                body = b""
                for chunk in answer.iter_bytes():
                    self._remaining(host)
                    body += chunk
                    if len(body) > _MAX_BYTES:
                        raise RegistryUnreachable(f"{url}: more than {_MAX_BYTES} bytes")
                return answer.status_code, body, answer.headers
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(f"{host}: {type(exc).__name__}: {exc}") from exc

    def _token_fetch(self, host: str) -> Fetch:
        """The token request of ``host``'s challenge, bounded and within the lookup's deadline like every other; a
        realm over plain HTTP only on a host read over plain HTTP anyway (credentials are never sent in clear text
        elsewhere)."""

        def fetch(method: str, url: str, headers: Mapping[str, str], content: bytes) -> tuple[int, bytes]:
            check_realm(host, url, self._plain)
            status, body, _headers = self._stream(method, url, headers, content, host)
            return status, body

        return fetch

    def _json(
        self, host: str, repository: str, path: str, accept: str, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        status, body = self._get(host, repository, path, accept)
        if status == 404 and missing_ok:
            return None
        if status != 200:
            raise RegistryUnreachable(f"{host}/v2/{repository}/{path}: HTTP {status}")
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise RegistryUnreachable(f"{host}/v2/{repository}/{path}: not JSON") from exc
        if not isinstance(value, dict):
            raise RegistryUnreachable(f"{host}/v2/{repository}/{path}: not a JSON object")
        return value

    def bundles(self, image: str, *, predicate_type: str = "") -> list[str]:
        """The Sigstore bundles attached to ``image`` (as text), through the referrers API or the referrers tag; with
        ``predicate_type``, only those whose manifest says so (``dev.sigstore.bundle.predicateType``)."""
        with self._lookup():
            return self._bundles(image, predicate_type)

    def _bundles(self, image: str, predicate_type: str) -> list[str]:
        host, repository, digest = parse_image(image)
        index = self._json(host, repository, f"referrers/{digest}", _INDEX, missing_ok=True)
        if index is None:
            index = self._json(host, repository, f"manifests/{digest.replace(':', '-')}", _INDEX, missing_ok=True)
        entries = [m for m in (index or {}).get("manifests") or [] if isinstance(m, dict)]
        found = []
        for entry in [m for m in entries if m.get("artifactType") == BUNDLE_TYPE][:_MAX_REFERRERS]:
            manifest = self._json(host, repository, f"manifests/{entry.get('digest')}", _MANIFEST) or {}
            annotations = manifest.get("annotations") or {}
            if predicate_type and annotations.get(PREDICATE_ANNOTATION) != predicate_type:
                continue
            for layer in manifest.get("layers") or []:
                if isinstance(layer, dict) and layer.get("mediaType") == BUNDLE_TYPE:
                    found.append(self._blob(host, repository, str(layer.get("digest"))))
        return found

    def resolve(self, host: str, repository: str, tag: str) -> str:
        """The digest of the manifest (or index) ``tag`` names now: the SHA-256 of the bytes the registry sent,
        which must agree with its ``Docker-Content-Digest`` where it gives one. ``OciError`` for a tag the registry
        does not have, ``RegistryUnreachable`` for everything else."""
        with self._lookup():
            status, body, header = self._read(host, repository, f"manifests/{tag}", _ACCEPT_ANY_MANIFEST)
        if status == 404:
            raise OciError(f"{host} has no tag '{tag}' in {repository} (HTTP 404)")
        if status != 200:
            raise RegistryUnreachable(f"{host}/v2/{repository}/manifests/{tag}: HTTP {status}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if header and header != digest:
            raise RegistryUnreachable(f"{host}: the manifest of '{tag}' hashes to {digest}, the registry said {header}")
        return digest

    def _blob(self, host: str, repository: str, digest: str) -> str:
        status, body = self._get(host, repository, f"blobs/{digest}", "application/octet-stream")
        if status != 200:
            raise RegistryUnreachable(f"{host}/v2/{repository}/blobs/{digest}: HTTP {status}")
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryUnreachable(f"{host}: blob {digest} does not hash to its digest")
        return body.decode("utf-8", "replace")

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()


def _pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def verify_bundle(bundle: str, digest: str, authority: Authority) -> str:
    """The authority's name when ``bundle`` is a DSSE Sigstore bundle signed by its key over an in-toto statement
    naming ``digest``; ``SignatureInvalid`` saying why otherwise."""
    try:
        document = json.loads(bundle)
        envelope = document["dsseEnvelope"]
        payload_type, payload = str(envelope["payloadType"]), base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureInvalid(f"not a DSSE Sigstore bundle ({type(exc).__name__}: {exc})") from None
    if not str(document.get("mediaType", "")).startswith("application/vnd.dev.sigstore.bundle"):
        raise SignatureInvalid(f"mediaType {document.get('mediaType')!r} is not a Sigstore bundle")
    if payload_type != "application/vnd.in-toto+json":
        raise SignatureInvalid(f"payloadType {payload_type!r}, expected application/vnd.in-toto+json")
    key = serialization.load_pem_public_key(authority.public_key.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureInvalid(f"{authority.name}: only EC keys verify image signatures, got {type(key).__name__}")
    message = _pae(payload_type, payload)
    for signature in signatures:
        try:
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            break
        except InvalidSignature:
            continue
    else:
        raise SignatureInvalid(f"not signed by {authority.name}")
    try:
        statement = json.loads(payload)
        subjects = [str((s.get("digest") or {}).get("sha256", "")) for s in statement["subject"]]
        predicate_type = statement.get("predicateType")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureInvalid(f"the signed statement is malformed ({type(exc).__name__})") from None
    _signs_image(predicate_type, ["sha256:" + subject for subject in subjects], digest, authority.name)
    return authority.name


def _signs_image(predicate_type: object, subjects: Sequence[str], digest: str, signer: str) -> None:
    """A verified statement signs ``digest`` only with cosign's sign predicate and that digest as a subject."""
    if predicate_type != COSIGN_SIGN_PREDICATE:  # an attestation (provenance, a scan) about the image is no sign-off
        raise SignatureInvalid(
            f"statement predicateType: got {predicate_type!r}, expected {COSIGN_SIGN_PREDICATE!r} (cosign sign): "
            f"signed by {signer}, but an attestation about an image does not sign it"
        )
    if digest not in subjects:
        raise SignatureInvalid(f"signed by {signer} for {list(subjects[:1])}, not {digest}")


class ImageSignatureChecker:
    """``check(image, authorities)`` for the evidence: a lookup bounded by ``timeout_seconds``, bundle lists kept
    ``ttl_seconds`` (failures are not kept). ``guard`` runs before anything that would wait (the webhook's inline
    guard raises there)."""

    def __init__(
        self,
        client: OciClient,
        *,
        timeout_seconds: float,
        ttl_seconds: float = 30.0,
        guard: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        self._client = client
        self._verifier = verifier if verifier is not None else OmsVerifier()
        self._timeout = timeout_seconds
        self._ttl = ttl_seconds
        self._guard = guard
        self._clock = clock
        self._bundles: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="ocisig")

    def _fetch(self, image: str, predicate_type: str = "") -> list[str]:
        now = self._clock()
        key = f"{predicate_type} {image}"
        with self._lock:
            hit = self._bundles.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        bundles = self._within_deadline(
            lambda: self._client.bundles(image, predicate_type=predicate_type),
            f"signature lookup timed out after {self._timeout:g}s",
        )
        with self._lock:
            self._bundles[key] = (now + self._ttl, bundles)
            while len(self._bundles) > 1024:
                self._bundles.popitem(last=False)
        return bundles

    def check(self, image: str, authorities: Sequence[Authority]) -> ImageSignatures:
        try:
            _host, _repository, digest = parse_image(image)
            bundles = self._fetch(image)
        except SignatureInvalid as exc:
            return ImageSignatures(image=image, problems=(str(exc),))
        except RegistryUnreachable as exc:
            return ImageSignatures(image=image, error=f"signatures could not be read: {exc}")
        signers: dict[str, str] = {}
        problems: list[str] = []
        for index, bundle in enumerate(bundles):
            for authority in authorities:
                if authority.fingerprint in signers:
                    continue
                try:
                    signers[authority.fingerprint] = self._verify(bundle, digest, authority)
                except SignatureInvalid as exc:
                    problems.append(f"bundle {index}: {exc}")
        return ImageSignatures(image=image, signers=signers, bundles=len(bundles), problems=tuple(problems))

    def _verify(self, bundle: str, digest: str, authority: Authority) -> str:
        """A key's bundle is checked here (cosign's public-key hint is not model_signing's); a certificate chain's
        or a keyless identity's by the signature verifier, as any attestation (chain to the authority's roots, or
        Fulcio identity and Rekor entry), then its statement must be cosign's sign predicate naming ``digest``.
        Anything but a verdict on the bundle (a verifier that cannot run, or a review that must not wait) is raised,
        and denies."""
        if authority.kind == "key":
            return verify_bundle(bundle, digest, authority)
        try:
            attestation = self._verifier.verify_attestation(bundle, authority)
        except VerificationFailed as exc:
            raise SignatureInvalid(f"not signed by {authority.name}: {exc.user_message}") from None
        statement = attestation.statement
        signer = f"{authority.name} ({attestation.signer})"
        _signs_image(statement.predicate_type, [d for _name, d in statement.subjects], digest, signer)
        return authority.name

    def resolve(self, reference: Reference) -> str:
        """The digest ``reference``'s tag names now, asked within the lookup deadline and never kept (a tag is
        resolved when it is written, and then no more). Raises ``OciError`` saying why."""
        tag = reference.tag or "latest"
        try:
            return self._within_deadline(
                lambda: self._client.resolve(reference.host, reference.repository, tag),
                f"{reference.host} did not answer within {self._timeout:g}s",
            )
        except RegistryUnreachable as exc:
            raise OciError(str(exc)) from None

    def _within_deadline(self, call: Callable[[], _T], timed_out: str) -> _T:
        """``call`` (a registry lookup) on the lookup pool, for at most ``timeout_seconds``; the guard runs first
        (the webhook's inline decisions must not wait). ``RegistryUnreachable(timed_out)`` past the deadline."""
        self._guard()
        future = self._pool.submit(call)
        try:
            return future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RegistryUnreachable(timed_out) from None

    def model_bundles(self, uri: str) -> list[str]:
        """The OMS signature bundles attached to the model artifact ``oci://host/repo@sha256:...`` (predicate
        ``https://model_signing/signature/v1.0``), bounded and cached like image signatures. Raises ``OciError``."""
        try:
            return self._fetch(uri.removeprefix("oci://"), OMS_PREDICATE)
        except (SignatureInvalid, RegistryUnreachable) as exc:
            raise OciError(str(exc)) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
