"""Registry credentials (adapters/registryauth.py): the cluster admin's Docker config JSON read strictly, challenges
parsed, tokens kept per registry and scope until shortly before they expire and no more than a bounded number, and
the token request made by the OCI client within the lookup's deadline and size bound (against loopback sockets: a
registry that asks for a token and a token server that drips or floods)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devmlops.adapters.ocisig import OciClient, RegistryUnreachable
from devmlops.adapters.registryauth import (
    MAX_TOKEN_SECONDS,
    MAX_TOKENS,
    Credential,
    RegistryAuth,
    RegistryAuthError,
    load_docker_config,
    parse_challenge,
)
from devmlops.errors import ConfigurationError, InvalidInputError

CHALLENGE = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/m:pull"'


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_docker_config_gives_credentials_by_registry_host_in_each_of_its_forms(tmp_path: Path) -> None:
    config = {
        "auths": {
            "https://registry.example:5000/v1/": {"auth": b64("ci:pa:ss")},
            "other.example": {"username": "u", "password": "p"},
            "https://index.docker.io/v1/": {"identitytoken": "refresh-me"},
        }
    }
    credentials = load_docker_config(write(tmp_path / "config.json", config))
    assert credentials["registry.example:5000"] == Credential("ci", "pa:ss")  # a password may hold ':'
    assert credentials["other.example"] == Credential("u", "p")
    assert credentials["registry-1.docker.io"].identity_token == "refresh-me"
    assert "pa:ss" not in repr(credentials)  # a log line never shows a password


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"credsStore": "desktop"}, "auths: expected an object of registry hosts"),
        ({"auths": {"r.example": "x"}}, r"auths.r.example: got str, expected an object"),
        ({"auths": {"r.example": {"auth": "%%%"}}}, r"auths.r.example.auth: not base64 of user:password"),
        ({"auths": {"r.example": {"auth": b64("no-colon")}}}, r"auths.r.example.auth: expected base64 of user:pass"),
        ({"auths": {"r.example": {"username": "u"}}}, r"auths.r.example: expected auth, username and password, or"),
        ({"auths": {"r.example": {"password": 3}}}, r"auths.r.example.password: got int, expected a string"),
    ],
)
def test_a_malformed_docker_config_is_refused_naming_the_field(tmp_path: Path, document: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_docker_config(write(tmp_path / "config.json", document))


def test_a_process_given_a_malformed_or_missing_file_does_not_start(tmp_path: Path) -> None:
    (tmp_path / "huge.json").write_bytes(b" " * (1024 * 1024 + 1))
    with pytest.raises(ConfigurationError, match="more than 1048576 bytes"):
        RegistryAuth.from_file(tmp_path / "huge.json")
    with pytest.raises(ConfigurationError, match="cannot be read"):
        RegistryAuth.from_file(tmp_path / "absent.json")
    assert RegistryAuth.from_file(None).credential("registry.example") is None  # no file: anonymous reads


def test_a_challenge_keeps_a_quoted_scope_with_commas() -> None:
    scheme, params = parse_challenge('Bearer realm="https://a/token",service=reg,scope="repository:x/y:pull,push"')
    assert (scheme, params) == (
        "bearer",
        {"realm": "https://a/token", "service": "reg", "scope": "repository:x/y:pull,push"},
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TokenServer:
    """The transport of the token request: records what was asked and answers a token valid ``seconds``."""

    def __init__(self, seconds: float | None = 60, status: int = 200) -> None:
        self.asked: list[tuple[str, str, dict[str, str], bytes]] = []
        self.seconds, self.status = seconds, status

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        self.asked.append((method, url, dict(headers), body))
        answer: dict[str, Any] = {"token": f"t{len(self.asked)}"}
        if self.seconds is not None:
            answer["expires_in"] = self.seconds
        return self.status, json.dumps(answer).encode()


def test_a_token_is_asked_with_the_registrys_credentials_and_kept_until_shortly_before_it_expires() -> None:
    clock = Clock()
    auth = RegistryAuth({"registry.example": Credential("ci", "pw")}, clock=clock)
    tokens = TokenServer(seconds=60)
    scope = "repository:team/m:pull"
    assert auth.respond("registry.example", scope, CHALLENGE, tokens) == "Bearer t1"
    method, url, headers, _body = tokens.asked[0]
    assert (method, url) == (
        "GET",
        "https://auth.example/token?service=registry.example&scope=repository%3Ateam%2Fm%3Apull",
    )
    assert headers == {"Authorization": "Basic " + b64("ci:pw")}
    clock.now += 54
    assert auth.header("registry.example", scope) == "Bearer t1"
    clock.now += 2  # 56 s: within the 5 s margin of its expiry
    assert auth.header("registry.example", scope) is None
    assert auth.header("registry.example", "repository:other:pull") is None  # a token is for its scope only


def test_a_token_is_kept_under_the_scope_the_client_asks_by_even_when_the_challenge_names_another() -> None:
    """A registry may challenge with a scope spelled otherwise than the client's; the token is found again by the
    client's, and asked for the registry's."""
    auth = RegistryAuth({}, clock=Clock())
    tokens = TokenServer()
    auth.respond("registry.example", "repository:team/m:pull", CHALLENGE.replace(":pull", ":pull,push"), tokens)
    assert "scope=repository%3Ateam%2Fm%3Apull%2Cpush" in tokens.asked[0][1]
    assert auth.header("registry.example", "repository:team/m:pull") == "Bearer t1"


def test_a_token_is_kept_no_longer_than_the_cap_whatever_its_server_says() -> None:
    clock = Clock()
    auth = RegistryAuth({}, clock=clock)  # no credentials: an anonymous token (as Docker Hub gives for public images)
    tokens = TokenServer(seconds=86400)
    auth.respond("registry.example", "s", CHALLENGE, tokens)
    assert "Authorization" not in tokens.asked[0][2]
    clock.now += MAX_TOKEN_SECONDS - 4
    assert auth.header("registry.example", "repository:team/m:pull") is None


def test_the_tokens_kept_are_bounded_the_least_recently_used_going_first() -> None:
    auth = RegistryAuth({}, clock=Clock())
    tokens = TokenServer()
    for index in range(MAX_TOKENS + 1):
        challenge = f'Bearer realm="https://auth.example/token",scope="repository:r{index}:pull"'
        auth.respond("registry.example", "", challenge, tokens)
    assert auth.header("registry.example", "repository:r0:pull") is None
    assert auth.header("registry.example", f"repository:r{MAX_TOKENS}:pull") == f"Bearer t{MAX_TOKENS + 1}"


def test_an_identity_token_is_exchanged_with_the_oauth2_refresh_grant() -> None:
    auth = RegistryAuth({"registry.example": Credential(identity_token="refresh-me")}, clock=Clock())
    tokens = TokenServer()
    auth.respond("registry.example", "", CHALLENGE, tokens)
    method, url, headers, body = tokens.asked[0]
    assert (method, url, headers["Content-Type"]) == (
        "POST",
        "https://auth.example/token",
        "application/x-www-form-urlencoded",
    )
    assert b"grant_type=refresh_token&refresh_token=refresh-me" in body
    assert b"scope=repository%3Ateam%2Fm%3Apull" in body


@pytest.mark.parametrize(
    ("credentials", "challenge", "tokens", "message"),
    [
        ({}, 'Basic realm="r"', TokenServer(), r"registry r.example requires credentials \(HTTP 401, Basic realm="),
        ({}, CHALLENGE, TokenServer(status=401), r"requires credentials \(its token server https://auth.example/token"),
        ({"r.example": Credential("u", "p")}, CHALLENGE, TokenServer(status=403), r"refused the credentials"),
        ({"r.example": Credential("u", "p")}, CHALLENGE, TokenServer(status=500), r"token server .* answered HTTP 500"),
        (
            {"r.example": Credential("u", "p")},
            "Negotiate x",
            TokenServer(),
            r"asks for authentication scheme 'negotiate'",
        ),
        ({"r.example": Credential("u", "p")}, 'Bearer service="s"', TokenServer(), r"Bearer challenge without an"),
    ],
)
def test_a_challenge_that_cannot_be_met_names_the_registry_and_its_answer(
    credentials: dict[str, Credential], challenge: str, tokens: TokenServer, message: str
) -> None:
    with pytest.raises(RegistryAuthError, match=message):
        RegistryAuth(credentials, clock=Clock()).respond("r.example", "s", challenge, tokens)


def test_a_rotated_file_is_read_again_and_its_tokens_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"auths": {"r.example": {"username": "old", "password": "p"}}})
    auth = RegistryAuth.from_file(path)
    auth.respond("r.example", "", CHALLENGE, TokenServer())
    assert auth.header("r.example", "repository:team/m:pull") == "Bearer t1"
    write(path, {"auths": {"r.example": {"username": "new", "password": "longer-password"}}})
    assert auth.header("r.example", "repository:team/m:pull") is None  # the token the old credentials earned
    assert auth.credential("r.example") == Credential("new", "longer-password")


class Loopback:
    """A registry that answers every ``/v2/`` request 401 with a Bearer challenge whose realm is ``/token`` on the
    same server; ``/token`` drips a byte every 0.2 s (``drip``) or sends more than any answer may be (``flood``)."""

    def __init__(self, mode: str) -> None:
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with contextlib.suppress(ConnectionError):
                    if self.path.startswith("/v2/"):
                        self.send_response(401)
                        realm = f"http://{outer.host}/token"
                        self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="s"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(200)
                    self.send_header("Content-Length", "10000000")
                    self.end_headers()
                    ends = time.monotonic() + 20
                    while time.monotonic() < ends and not outer.stop.is_set():
                        self.wfile.write(b" " if mode == "drip" else b" " * 65536)
                        self.wfile.flush()
                        if mode == "drip":
                            outer.stop.wait(0.2)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"


@contextlib.contextmanager
def loopback(mode: str) -> Iterator[Loopback]:
    served = Loopback(mode)
    thread = threading.Thread(target=served.server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.stop.set()
        served.server.shutdown()
        served.server.server_close()


def test_a_dripping_token_server_is_given_up_within_the_lookups_deadline() -> None:
    with loopback("drip") as registry:
        client = OciClient(plain_http=[registry.host], timeout=1.0)
        started = time.monotonic()
        with pytest.raises(RegistryUnreachable, match="deadline"):
            client.resolve(registry.host, "team/m", "1.0")
        client.close()
    assert time.monotonic() - started < 2.0


def test_a_token_server_that_sends_too_much_is_refused_unread() -> None:
    with loopback("flood") as registry:
        client = OciClient(plain_http=[registry.host], timeout=5.0)
        with pytest.raises(RegistryUnreachable, match="more than 262144 bytes"):
            client.resolve(registry.host, "team/m", "1.0")
        client.close()
