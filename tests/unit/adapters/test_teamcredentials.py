"""A team's own registry credentials for the storage initializer (adapters/servingverify.py: team_registry_auth):
the Secret devmlops-registry-auth of the model's namespace, given as DEVMLOPS_REGISTRY_AUTH by an optional
secretKeyRef, parsed as the admin's file is (adapters/registryauth.py), and the one 401 exchange (RegistryAuth.send)
every OCI client runs; the real command refuses a malformed Secret naming it and the field."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from devmlops.adapters.registryauth import Credential, RegistryAuth, RegistryAuthError, check_realm
from devmlops.adapters.servingverify import team_registry_auth
from devmlops.core.plan import ENV_PLAN
from devmlops.core.render import REGISTRY_AUTH_ENV
from devmlops.errors import InvalidInputError
from tests.unit.adapters.test_servingverify import plan_for

HOST = "registry.team-a.example:5000"
SCOPE = "repository:team-a/fraud:pull"


def secret(user: str, password: str, host: str = HOST) -> str:
    """The .dockerconfigjson of `kubectl create secret docker-registry`, as the Pod's environment holds it."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"username": user, "password": password, "auth": auth}}})


class BasicRegistry:
    """A registry's answers to one GET: 401 with a Basic challenge unless the right Basic credentials come along."""

    def __init__(self, user: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.sent: list[str] = []

    def __call__(self, headers: Mapping[str, str]) -> tuple[int, str]:
        self.sent.append(headers.get("Authorization", ""))
        return (200, "") if headers.get("Authorization") == self.expected else (401, 'Basic realm="team-a"')


def no_tokens(method: str, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
    raise AssertionError(f"no token request expected, got {method} {url}")


def send(auth: RegistryAuth, registry: BasicRegistry) -> tuple[int, str]:
    return auth.send(HOST, SCOPE, registry, lambda answer: answer, no_tokens)


def test_the_initializer_reads_the_teams_secret_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REGISTRY_AUTH_ENV, secret("team-a-puller", "pw"))
    auth = team_registry_auth()
    assert auth.credential(HOST) == Credential("team-a-puller", "pw")
    registry = BasicRegistry("team-a-puller", "pw")
    assert send(auth, registry) == (200, "")
    assert send(auth, registry) == (200, "")
    # Anonymous first; once the registry asked for Basic, the credentials go with every later request at once.
    assert registry.sent == ["", registry.expected, registry.expected]


@pytest.mark.parametrize("value", [None, ""])
def test_without_the_secret_a_registry_that_asks_is_refused_saying_which_secret_to_create(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """No Secret (the optional secretKeyRef leaves the variable unset) or an empty one: anonymous reads."""
    monkeypatch.delenv(REGISTRY_AUTH_ENV, raising=False)
    if value is not None:
        monkeypatch.setenv(REGISTRY_AUTH_ENV, value)
    with pytest.raises(RegistryAuthError) as raised:
        send(team_registry_auth(), BasicRegistry("team-a-puller", "pw"))
    assert str(raised.value) == (
        f'registry {HOST} requires credentials (HTTP 401, Basic realm="team-a"); the model\'s namespace has no Secret '
        "devmlops-registry-auth with a .dockerconfigjson for it: create one of type kubernetes.io/dockerconfigjson "
        'there with the team\'s credentials (docs/policies.md, "Private registries")'
    )


def test_a_secret_for_another_registry_or_with_a_wrong_password_is_refused_naming_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(REGISTRY_AUTH_ENV, secret("team-a-puller", "pw", host="elsewhere.example"))
    with pytest.raises(RegistryAuthError, match=r"\(DEVMLOPS_REGISTRY_AUTH\) has no entry for it$"):
        send(team_registry_auth(), BasicRegistry("team-a-puller", "pw"))
    monkeypatch.setenv(REGISTRY_AUTH_ENV, secret("team-a-puller", "wrong"))
    with pytest.raises(RegistryAuthError) as raised:
        send(team_registry_auth(), BasicRegistry("team-a-puller", "pw"))
    assert str(raised.value).startswith(
        f"registry {HOST} refused the credentials the Secret devmlops-registry-auth of the model's namespace "
        f"(DEVMLOPS_REGISTRY_AUTH) gives for it for {SCOPE} (HTTP 401"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", r"the Secret devmlops-registry-auth .*: not JSON"),
        ('{"credsStore": "desktop"}', r"the Secret devmlops-registry-auth .*: auths: expected an object"),
        (json.dumps({"auths": {HOST: {"auth": "!!"}}}), rf"auths\.{HOST}\.auth: not base64 of user:password"),
    ],
)
def test_a_malformed_secret_is_refused_naming_it_and_the_field(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv(REGISTRY_AUTH_ENV, value)
    with pytest.raises(InvalidInputError, match=message):
        team_registry_auth()


def test_the_real_command_refuses_a_malformed_secret_before_reading_any_registry(tmp_path: Path) -> None:
    """As the Pod runs it: the plan and the Secret in the environment; port 9 on loopback is never asked."""
    _model, plan = plan_for(tmp_path / "signed")  # a real plan: its signature is verified before the pull
    env = {**os.environ, ENV_PLAN: plan, REGISTRY_AUTH_ENV: json.dumps({"auths": {HOST: {"auth": "!!"}}})}
    uri = "devmlops+oci://127.0.0.1:9/team-a/fraud@sha256:" + "1" * 64
    done = subprocess.run(
        [sys.executable, "-m", "devmlops", "storage-initializer", uri, str(tmp_path / "served")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "the Secret devmlops-registry-auth of the model's namespace (DEVMLOPS_REGISTRY_AUTH)" in done.stderr
    assert f"auths.{HOST}.auth: not base64 of user:password" in done.stderr


def test_a_token_realm_over_plain_http_is_refused_unless_its_host_is_read_over_plain_http() -> None:
    check_realm(HOST, "https://auth.example/token?scope=x", ())
    check_realm(HOST, "http://127.0.0.1:5001/token", ("127.0.0.1:5001",))
    with pytest.raises(
        RegistryAuthError, match=rf"registry {HOST}: token realm http://auth.example/token is not HTTPS"
    ):
        check_realm(HOST, "http://auth.example/token?scope=x", ("127.0.0.1:5001",))
