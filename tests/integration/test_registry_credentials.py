"""Private registries: the webhook's and the operator's OCI reads with the cluster admin's Docker config JSON
(``--registry-auth-file``), against real distribution registries on loopback that require credentials: one with
htpasswd (HTTP Basic), one with the token flow (``auth: token``, its tokens from a test token server,
harness/registrytoken.py). Both serve the storage of an anonymous registry where the image was pushed and signed with
real cosign. With credentials a tag resolves and the referrer bundle is fetched and verifies (admitted); without, and
with wrong ones, each lookup fails naming the registry and what it answered (denied). The storage initializer holds no
credentials (by design: docs/policies.md, "Private registries"): its pull from a private registry fails saying so."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from devmlops.adapters.ociartifact import OciModel
from devmlops.adapters.ocisig import ImageSignatureChecker, OciClient, OciError
from devmlops.adapters.registryauth import RegistryAuth
from devmlops.adapters.servingverify import fetch_model
from devmlops.core.pinning import parse_reference
from devmlops.core.policy import Authority
from devmlops.errors import InvalidInputError
from devmlops.harness.oci import cosign_key_pair, cosign_sign, oci_registry, push_image, registry_storage
from devmlops.harness.registrytoken import TokenServer, token_server

pytestmark = pytest.mark.timeout(900)

USER, PASSWORD = "puller", "s3cret-pull"
# bcrypt (cost 10) of PASSWORD, made once with Python 3.11's crypt module (METHOD_BLOWFISH): distribution's htpasswd
# accepts bcrypt only, and the bcrypt package is not among this project's dependencies.
HTPASSWD = f"{USER}:$2b$10$OV9ZGbc1rxR3ZyPPM9EMte7hmAal23dDAQPlvCUHN8m8KAwod5MMO\n"


@dataclass(frozen=True)
class Private:
    basic: str  # host:port of the htpasswd registry
    token: str  # host:port of the token registry
    tokens: TokenServer
    digest: str  # of the image tagged "signed" (the same in both)
    model: str  # the path of an OCI model artifact, repository@sha256:... (the same in both)
    release: Authority
    work: Path


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    work = tmp_path_factory.mktemp("private")
    with ExitStack() as stack:
        public = stack.enter_context(oci_registry(work / "public"))
        key, pub = cosign_key_pair(work, "release")
        image = push_image(public, "team/triton", "signed", b"a server in a private registry")
        cosign_sign(key, image)
        (work / "model").mkdir()
        (work / "model" / "weights.bin").write_bytes(b"private weights")
        pusher = OciModel(plain_http=[public])
        model = pusher.push(public, "team/fraud", "1", work / "model").removeprefix(f"oci://{public}/")
        pusher.close()
        (work / "htpasswd").write_text(HTPASSWD)
        htpasswd = f"  htpasswd:\n    realm: devmlops-test\n    path: {work / 'htpasswd'}\n"
        storage = registry_storage(work / "public")
        basic = stack.enter_context(oci_registry(work / "basic", storage=storage, auth=htpasswd))
        tokens = stack.enter_context(token_server(work / "tokens", user=USER, password=PASSWORD))
        token = stack.enter_context(oci_registry(work / "token", storage=storage, auth=tokens.auth_yaml))
        release = Authority(name="release", kind="key", public_key=pub.read_text())
        yield Private(basic, token, tokens, image.partition("@")[2], model, release, work)


def auth_file(private: Private, name: str, entries: dict[str, dict[str, str]]) -> RegistryAuth:
    path = private.work / f"{name}.dockerconfigjson"
    path.write_text(json.dumps({"auths": entries}))
    return RegistryAuth.from_file(path)


def user_pass(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def checker(private: Private, auth: RegistryAuth | None) -> ImageSignatureChecker:
    realm_host = private.tokens.realm.split("/")[2]
    client = OciClient(plain_http=[private.basic, private.token, realm_host], timeout=5, auth=auth)
    return ImageSignatureChecker(client, timeout_seconds=5)


def resolve(checking: ImageSignatureChecker, host: str) -> str:
    return checking.resolve(parse_reference(f"{host}/team/triton:signed", field="image"))


@pytest.mark.parametrize("registry", ["basic", "token"])
def test_with_the_admins_credentials_a_tag_resolves_and_the_signature_referrer_verifies(
    private: Private, registry: str
) -> None:
    host = getattr(private, registry)
    entries = {private.basic: user_pass(USER, PASSWORD), f"http://{private.token}/v1/": user_pass(USER, PASSWORD)}
    checking = checker(private, auth_file(private, f"good-{registry}", entries))
    try:
        assert resolve(checking, host) == private.digest
        signatures = checking.check(f"{host}/team/triton@{private.digest}", [private.release])
        assert signatures.error == ""
        assert (signatures.bundles, list(signatures.signers.values())) == (1, ["release"])
    finally:
        checking.close()


@pytest.mark.parametrize("registry", ["basic", "token"])
def test_without_credentials_the_lookup_is_denied_naming_the_registry_and_the_option(
    private: Private, registry: str
) -> None:
    host = getattr(private, registry)
    checking = checker(private, None)
    try:
        with pytest.raises(OciError, match=rf"registry {host} requires credentials \(.*\); configure --registry-auth"):
            resolve(checking, host)
        signatures = checking.check(f"{host}/team/triton@{private.digest}", [private.release])
        assert not signatures.signers
        assert f"registry {host} requires credentials" in signatures.error
    finally:
        checking.close()


@pytest.mark.parametrize("registry", ["basic", "token"])
def test_with_wrong_credentials_the_lookup_is_denied_saying_the_registry_refused_them(
    private: Private, registry: str
) -> None:
    host = getattr(private, registry)
    entries = {private.basic: user_pass(USER, "wrong"), private.token: user_pass(USER, "wrong")}
    checking = checker(private, auth_file(private, f"wrong-{registry}", entries))
    try:
        with pytest.raises(OciError, match=rf"registry {host}.* refused the credentials --registry-auth-file gives"):
            resolve(checking, host)
        signatures = checking.check(f"{host}/team/triton@{private.digest}", [private.release])
        assert not signatures.signers
        assert "refused the credentials" in signatures.error
    finally:
        checking.close()


def test_a_registry_without_an_entry_in_the_file_is_denied_naming_the_file(private: Private) -> None:
    checking = checker(private, auth_file(private, "elsewhere", {"registry.example": user_pass(USER, PASSWORD)}))
    try:
        with pytest.raises(OciError, match=rf"registry {private.basic} requires credentials .* has no entry for it"):
            resolve(checking, private.basic)
    finally:
        checking.close()


def test_a_token_is_asked_once_per_repository_and_reused_until_it_expires(private: Private) -> None:
    checking = checker(private, auth_file(private, "reuse", {private.token: user_pass(USER, PASSWORD)}))
    before = len(private.tokens.issued)
    try:
        for _round in range(3):
            assert resolve(checking, private.token) == private.digest
        assert private.tokens.issued[before:] == ["repository:team/triton:pull"]
    finally:
        checking.close()


@pytest.mark.parametrize("registry", ["basic", "token"])
def test_the_storage_initializer_pulling_from_a_private_registry_fails_saying_it_reads_anonymously(
    private: Private, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = getattr(private, registry)
    monkeypatch.setenv("DEVMLOPS_OCI_PLAIN_HTTP", host)
    with pytest.raises(InvalidInputError, match=rf"registry {host} requires credentials .* pulled and pushed anonym"):
        fetch_model(f"devmlops+oci://{host}/{private.model}", tmp_path / "served")
    assert not list((tmp_path / "served").rglob("*.bin"))
