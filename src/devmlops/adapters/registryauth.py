"""Credentials for private OCI registries: a Docker config JSON the cluster admin gives the webhook and the operator
(``--registry-auth-file``, the ``.dockerconfigjson`` of a ``kubernetes.io/dockerconfigjson`` Secret in devmlops's own
namespace), or the one a team gives the storage initializer in its model's namespace (``from_env``: the Secret
``devmlops-registry-auth`` there, through an optional ``secretKeyRef``; docs/policies.md, "Private registries"), and
the two ways a registry asks for them: HTTP Basic, and the distribution token flow
(``WWW-Authenticate: Bearer realm=...,service=...,scope=...``: ask the realm for a token, with the registry's
credentials when there are some, and send it as ``Authorization: Bearer``).

Only the admin names credentials: a ModelDeployment names a registry host, never a Secret, so whoever may edit one
cannot make devmlops read with credentials she could not read herself (a confused deputy); the file is keyed by
registry host as Docker's is. A registry with no entry is read anonymously (Docker Hub's anonymous tokens included).

Tokens are kept per (registry, scope) until shortly before they expire, at most ``MAX_TOKEN_SECONDS`` and
``MAX_TOKENS`` of them; the file is read again when it changes (a rotated Secret), which drops every token. The
caller does every request (``Fetch``), so the token request is bounded in size and counted in the caller's deadline.
Every failure is a ``RegistryAuthError`` naming the registry and what it answered: never a verdict on an image.
``send`` is the one 401 dance every client here runs (ask, answer the challenge once, give up naming the registry).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from devmlops.errors import ConfigurationError, InvalidInputError

__all__ = [
    "AUTH_OPTION",
    "MAX_TOKENS",
    "MAX_TOKEN_SECONDS",
    "Credential",
    "Fetch",
    "RegistryAuth",
    "RegistryAuthError",
    "check_realm",
    "load_docker_config",
    "parse_challenge",
    "parse_docker_config",
    "registry_key",
]

AUTH_OPTION = "--registry-auth-file"
MAX_FILE_BYTES = 1024 * 1024
MAX_TOKENS = 256
MAX_TOKEN_SECONDS = 300.0  # however long a token server says its token lasts
_DEFAULT_TOKEN_SECONDS = 60.0  # the distribution token spec's default when expires_in is absent
_EXPIRY_MARGIN_SECONDS = 5.0
_MAX_TOKEN_CHARS = 16 * 1024
_DOCKER_HUB = "registry-1.docker.io"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", _DOCKER_HUB})
_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')

# (method, absolute URL, headers, body) -> (HTTP status, body): the caller's bounded, deadline-counted request.
Fetch = Callable[[str, str, Mapping[str, str], bytes], tuple[int, bytes]]
Answer = TypeVar("Answer")


class RegistryAuthError(Exception):
    """A registry asked for credentials that could not be given, or refused them: the reason names the registry."""


@dataclass(frozen=True, slots=True)
class Credential:
    """One registry's entry of the Docker config: a user and password, or an identity (refresh) token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def registry_key(name: str) -> str:
    """The registry host a Docker config key names: ``https://host:port/v1/`` and ``host:port`` alike; Docker Hub's
    names as ``parse_image`` spells its host."""
    host = name.strip()
    if "://" in host:
        host = urllib.parse.urlsplit(host).netloc
    host = host.split("/", 1)[0].lower()
    return _DOCKER_HUB if host in _HUB_NAMES else host


def _credential(source: str, key: str, entry: Any) -> Credential:
    where = f"{source}: auths.{key}"
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{where}: got {type(entry).__name__}, expected an object")
    strings = {k: v for k, v in entry.items() if k in ("auth", "username", "password", "identitytoken")}
    for name, value in strings.items():
        if not isinstance(value, str):
            raise InvalidInputError(f"{where}.{name}: got {type(value).__name__}, expected a string")
    if strings.get("identitytoken"):
        return Credential(username=strings.get("username", ""), identity_token=strings["identitytoken"])
    if strings.get("auth"):
        try:
            decoded = base64.b64decode(strings["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInputError(f"{where}.auth: not base64 of user:password") from None
        username, colon, password = decoded.partition(":")
        if not colon or not username:
            raise InvalidInputError(f"{where}.auth: expected base64 of user:password (no ':' found or no user)")
        return Credential(username=username, password=password)
    if strings.get("username") and "password" in strings:
        return Credential(username=strings["username"], password=strings["password"])
    raise InvalidInputError(f"{where}: expected auth, username and password, or identitytoken")


def load_docker_config(path: Path) -> dict[str, Credential]:
    """The credentials of a Docker config JSON file (``parse_docker_config``); ``InvalidInputError`` naming the file
    when it cannot be read or is larger than ``MAX_FILE_BYTES``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"{AUTH_OPTION} {path}: cannot be read ({exc.strerror or exc})") from exc
    return parse_docker_config(data, f"{AUTH_OPTION} {path}", short=str(path))


def parse_docker_config(data: bytes, source: str, *, short: str = "") -> dict[str, Credential]:
    """The credentials of a Docker config JSON (``{"auths": {host: {...}}}``) by registry host. Raises
    ``InvalidInputError`` naming ``source`` (``short`` in the field errors, when given) and the field for anything
    else (a credential helper, ``credsStore``, is not run: devmlops runs no program a file names)."""
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInputError(f"{source}: more than {MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise InvalidInputError(f"{source}: not JSON ({exc})") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    where = short or source
    if not isinstance(auths, dict):
        raise InvalidInputError(f"{where}: auths: expected an object of registry hosts (a .dockerconfigjson)")
    credentials = {registry_key(key): _credential(where, key, entry) for key, entry in auths.items()}
    credentials.pop("", None)
    return credentials


def check_realm(host: str, url: str, plain_http: Collection[str]) -> None:
    """A token realm over plain HTTP only on a host read over plain HTTP anyway (``plain_http``): credentials are
    never sent in clear text elsewhere. ``RegistryAuthError`` naming the registry otherwise."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    if scheme.lower() != "https" and not (scheme.lower() == "http" and netloc in plain_http):
        raise RegistryAuthError(
            f"registry {host}: token realm {url.split('?')[0]} is not HTTPS (only the registries of "
            "--oci-plain-http are read over HTTP)"
        )


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``("bearer", {"realm": ..., "service": ..., "scope": ...})`` of a ``WWW-Authenticate`` header (scheme in lower
    case; quoted values may hold commas, as a scope of several actions does)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


def _shown(header: str) -> str:
    return header[:200] if header else "no WWW-Authenticate header"


class RegistryAuth:
    """Credentials by registry host and the tokens they earned. ``header(host, scope)`` is what to send before asking
    (a known Basic registry, a token still valid); ``respond(...)`` answers a 401's challenge; ``refused(...)`` is the
    error when the registry still says no."""

    def __init__(
        self,
        credentials: Mapping[str, Credential] | None = None,
        *,
        path: Path | None = None,
        source: str = "",
        missing: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        # Where the credentials come from, as errors name it: the admin's file, or a team's Secret (``from_env``).
        self._source = source or AUTH_OPTION
        self._missing = missing  # what to do when a registry asks and there are no credentials at all
        self._stamp: tuple[int, int] | None = None
        self._credentials: dict[str, Credential] = dict(credentials or {})
        self._clock = clock
        self._tokens: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._basic: set[str] = set()  # hosts that answered with a Basic challenge
        self._lock = threading.Lock()
        if path is not None:
            self._reload()

    @classmethod
    def from_file(cls, path: Path | None) -> RegistryAuth:
        """The credentials of ``path`` (read again whenever it changes); none (anonymous reads) without a path.
        ``ConfigurationError`` when the file is unreadable or malformed now: the process does not start."""
        try:
            return cls(path=path)
        except RegistryAuthError as exc:
            raise ConfigurationError(str(exc)) from None

    @classmethod
    def from_env(cls, value: str | None, source: str, *, missing: str) -> RegistryAuth:
        """The credentials of a Docker config JSON given as text (an environment variable filled from a Secret by an
        optional ``secretKeyRef``: ``source`` says which, for errors); none (anonymous reads) when unset or empty,
        and then a registry that asks for credentials is an error saying ``missing`` (what to do).
        ``InvalidInputError`` naming ``source`` and the field when it is malformed."""
        if not value:
            return cls(source=source, missing=missing)
        return cls(parse_docker_config(value.encode(), source), source=source)

    def _reload(self) -> None:
        """Read the file again when it changed (Kubernetes swaps a mounted Secret's files): tokens are dropped."""
        if self._path is None:
            return
        try:
            stat = self._path.stat()
        except OSError as exc:
            raise RegistryAuthError(f"{AUTH_OPTION} {self._path}: cannot be read ({exc.strerror or exc})") from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            credentials = load_docker_config(self._path)
        except InvalidInputError as exc:
            raise RegistryAuthError(exc.user_message) from None
        with self._lock:
            self._credentials, self._stamp = credentials, stamp
            self._tokens.clear()
            self._basic.clear()

    def credential(self, host: str) -> Credential | None:
        self._reload()
        return self._credentials.get(registry_key(host))

    def header(self, host: str, scope: str) -> str | None:
        """The ``Authorization`` to send to ``host`` for ``scope`` before any challenge: a token still valid, or Basic
        credentials for a host that asked for them before; None otherwise. A rotated file is read first (a stat)."""
        self._reload()
        now = self._clock()
        with self._lock:
            kept = self._tokens.get((host, scope))
            if kept is not None:
                if kept[0] > now:
                    self._tokens.move_to_end((host, scope))
                    return kept[1]
                del self._tokens[(host, scope)]
            basic = host in self._basic
        credential = self._credentials.get(registry_key(host)) if basic else None
        return credential.basic() if credential is not None and credential.username and credential.password else None

    def respond(self, host: str, scope: str, challenge: str, fetch: Fetch) -> str:
        """The ``Authorization`` to retry with after ``host`` answered 401 with ``challenge``: Basic credentials, or a
        token from the challenge's realm (asked with the credentials, or anonymously when none are configured)."""
        scheme, params = parse_challenge(challenge)
        credential = self.credential(host)
        if scheme == "basic":
            if credential is None or not credential.username or not credential.password:
                raise self._needs_credentials(host, f"HTTP 401, {_shown(challenge)}")
            with self._lock:
                self._basic.add(host)
            return credential.basic()
        if scheme != "bearer":
            raise RegistryAuthError(
                f"registry {host} asks for authentication scheme {scheme or 'none'!r} ({_shown(challenge)}); "
                "expected Basic or Bearer"
            )
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise RegistryAuthError(f"registry {host}: Bearer challenge without an http(s) realm ({_shown(challenge)})")
        asked_scope = params.get("scope") or scope  # what the registry wants; kept under what the caller asks by
        key = (host, scope or asked_scope)
        asked = self._clock()
        token, seconds = self._token(host, realm, params.get("service", ""), asked_scope, credential, fetch)
        value = f"Bearer {token}"
        lifetime = min(seconds, MAX_TOKEN_SECONDS) - _EXPIRY_MARGIN_SECONDS
        if lifetime > 0:
            with self._lock:
                self._tokens[key] = (asked + lifetime, value)
                self._tokens.move_to_end(key)
                while len(self._tokens) > MAX_TOKENS:
                    self._tokens.popitem(last=False)
        return value

    def _token(
        self, host: str, realm: str, service: str, scope: str, credential: Credential | None, fetch: Fetch
    ) -> tuple[str, float]:
        """A token and its lifetime in seconds from the realm: GET with Basic credentials (or none), or the OAuth2
        POST of an identity token."""
        query = [("service", service)] if service else []
        query += [("scope", scope)] if scope else []
        if credential is not None and credential.identity_token:
            form = [("grant_type", "refresh_token"), ("refresh_token", credential.identity_token)]
            form += [("client_id", "devmlops"), *query]
            body = urllib.parse.urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            status, answer = fetch("POST", realm, headers, body)
        else:
            headers = {"Authorization": credential.basic()} if credential is not None and credential.username else {}
            separator = "&" if "?" in realm else "?"
            url = f"{realm}{separator}{urllib.parse.urlencode(query)}" if query else realm
            status, answer = fetch("GET", url, headers, b"")
        if status in (401, 403):
            if credential is None:
                raise self._needs_credentials(host, f"its token server {realm} answered HTTP {status}")
            raise RegistryAuthError(
                f"registry {host}: its token server {realm} refused the credentials {self._source} gives for it "
                f"(HTTP {status})"
            )
        if status != 200:
            raise RegistryAuthError(f"registry {host}: its token server {realm} answered HTTP {status}")
        try:
            document = json.loads(answer)
            token = document.get("token") or document.get("access_token")
            seconds = float(document.get("expires_in") or _DEFAULT_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError):
            raise RegistryAuthError(
                f"registry {host}: its token server {realm} sent no token (not a JSON object)"
            ) from None
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS or not token.isprintable():
            raise RegistryAuthError(f"registry {host}: its token server {realm} sent no usable token")
        return token, seconds

    def refused(self, host: str, scope: str, status: int, challenge: str) -> RegistryAuthError:
        """The error once ``host`` still answers 401 or 403 to the credentials (or token) it was sent; what it kept
        is dropped."""
        with self._lock:
            self._tokens.pop((host, scope), None)
        if self.credential(host) is None:
            return self._needs_credentials(host, f"HTTP {status}, {_shown(challenge)}")
        return RegistryAuthError(
            f"registry {host} refused the credentials {self._source} gives for it for {scope} "
            f"(HTTP {status}, {_shown(challenge)})"
        )

    def _needs_credentials(self, host: str, answered: str) -> RegistryAuthError:
        if self._missing and not self._credentials:
            configured = self._missing
        elif self._path is not None:
            configured = f"{AUTH_OPTION} {self._path} has no entry for it"
        elif self._source == AUTH_OPTION:
            configured = f"configure {AUTH_OPTION}"
        else:
            configured = f"{self._source} has no entry for it"
        return RegistryAuthError(f"registry {host} requires credentials ({answered}); {configured}")

    def send(
        self,
        host: str,
        scope: str,
        ask: Callable[[Mapping[str, str]], Answer],
        answered: Callable[[Answer], tuple[int, str]],
        fetch: Fetch,
        *,
        discard: Callable[[Answer], None] | None = None,
    ) -> Answer:
        """One request to ``host`` for ``scope`` with whatever this holds for it: ``ask(headers)`` sends it (with an
        ``Authorization`` header, or none), ``answered(answer)`` is its (status, ``WWW-Authenticate``). A 401 is
        answered once (``respond``: Basic, or a token asked through ``fetch``) and asked again; a registry that still
        says 401, or 403 to credentials, is a ``RegistryAuthError`` naming it. ``discard`` releases an answer not
        returned (a streamed body)."""
        sent = self.header(host, scope)
        answer = ask({"Authorization": sent} if sent else {})
        status, challenge = answered(answer)
        if status == 401:
            if discard is not None:
                discard(answer)
            sent = self.respond(host, scope, challenge, fetch)
            answer = ask({"Authorization": sent})
            status, challenge = answered(answer)
        if status == 401 or (status == 403 and sent):
            if discard is not None:
                discard(answer)
            raise self.refused(host, scope, status, challenge)
        return answer
