"""A token server for a distribution registry with ``auth: token`` (the Docker registry token flow), for the tests of
registry credentials: on ``GET /token?service=...&scope=repository:<name>:<actions>`` with the Basic credentials of
its one user it answers ``{"token": <JWT>, "expires_in": ...}``, an ES256 JWT that grants the scope's actions and is
signed with a key the registry trusts through its ``jwks`` file; anything else is 401. It runs on a loopback port in
a thread of the test process and counts the tokens it issued (to see them reused).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["TokenServer", "token_server"]

_KEY_ID = "devmlops-test"
SERVICE = "devmlops-test-registry"
ISSUER = "devmlops-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Where it listens (``realm``), the registry's ``auth:`` section that trusts it, and the tokens issued."""

    realm: str
    auth_yaml: str
    issued: list[str] = field(default_factory=list)  # the scopes of the tokens issued, in order


def _jwt(key: ec.EllipticCurvePrivateKey, scope: str, user: str, seconds: int) -> str:
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": user,
        "aud": SERVICE,
        "exp": now + seconds,
        "nbf": now - 5,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "access": [{"type": kind, "name": name, "actions": actions.split(",")}] if name else [],
    }
    header = {"alg": "ES256", "typ": "JWT", "kid": _KEY_ID}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@contextmanager
def token_server(workdir: Path, *, user: str, password: str, seconds: int = 300) -> Iterator[TokenServer]:
    """A token server on 127.0.0.1 for ``user``/``password``, its tokens valid ``seconds``; its JWKS in ``workdir``."""
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "kid": _KEY_ID, "x": _b64(numbers.x.to_bytes(32, "big"))}
    jwk["y"] = _b64(numbers.y.to_bytes(32, "big"))
    workdir.mkdir(parents=True, exist_ok=True)
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    issued: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path != "/token" or self.headers.get("Authorization") != expected:
                self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
                return
            scope = query.get("scope", "")
            issued.append(scope)
            self._answer(200, {"token": _jwt(key, scope, user, seconds), "expires_in": seconds})

        def _answer(self, status: int, document: object) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="token-server", daemon=True)
    thread.start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    auth_yaml = f"  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    jwks: {jwks}\n"
    try:
        yield TokenServer(realm=realm, auth_yaml=auth_yaml, issued=issued)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
