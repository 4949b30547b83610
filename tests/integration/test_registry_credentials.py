"""Private registries: the webhook's and the operator's OCI reads with the cluster admin's Docker config JSON
(``--registry-auth-file``), against real distribution registries on loopback that require credentials: one with
htpasswd (HTTP Basic), one with the token flow (``auth: token``, its tokens from a test token server,
harness/registrytoken.py). Both serve the storage of an anonymous registry where the image was pushed and signed with
real cosign. With credentials a tag resolves and the referrer bundle is fetched and verifies (admitted); without, and
with wrong ones, each lookup fails naming the registry and what it answered (denied). The storage initializer, run as
the real `devmlops storage-initializer` command with the environment a Pod gives it, pulls a signed private model
with the team's own credentials (the Secret devmlops-registry-auth of the model's namespace, as the optional
DEVMLOPS_REGISTRY_AUTH) and verifies it; without them it fails saying which Secret to create, with wrong ones naming
the registry that refused them, and a tampered blob still fails with them (docs/policies.md, "Private registries")."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from devmlops.adapters.ociartifact import OciModel
from devmlops.adapters.ocisig import ImageSignatureChecker, OciClient, OciError
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.registryauth import RegistryAuth
from devmlops.core.pinning import parse_reference
from devmlops.core.plan import ENV_PLAN, VerificationPlan
from devmlops.core.policy import Authority, compile_policy
from devmlops.core.render import REGISTRY_AUTH_ENV
from devmlops.harness.oci import cosign_key_pair, cosign_sign, oci_registry, push_image, registry_storage
from devmlops.harness.registrytoken import TokenServer, token_server
from tests.support.models import make_key, make_model, sign_with_key

pytestmark = pytest.mark.timeout(900)

USER, PASSWORD = "puller", "s3cret-pull"
TAMPERED_WEIGHTS = b"weights someone will change in the registry's storage" * 16
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
    signed: str  # the path of a signed OCI model, repository@sha256:...
    plan: str  # its verification plan (JSON), as the operator renders it into the Pod
    tampered: str  # the path of another artifact of the same signed files, one of its blobs changed in the storage
    tampered_plan: str


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
        signed, plan = signed_model(pusher, public, work, "team/scored")
        tampered, tampered_plan = signed_model(pusher, public, work, "team/tampered", TAMPERED_WEIGHTS)
        pusher.close()
        tamper_blob(registry_storage(work / "public"), TAMPERED_WEIGHTS)
        (work / "htpasswd").write_text(HTPASSWD)
        htpasswd = f"  htpasswd:\n    realm: devmlops-test\n    path: {work / 'htpasswd'}\n"
        storage = registry_storage(work / "public")
        basic = stack.enter_context(oci_registry(work / "basic", storage=storage, auth=htpasswd))
        tokens = stack.enter_context(token_server(work / "tokens", user=USER, password=PASSWORD))
        token = stack.enter_context(oci_registry(work / "token", storage=storage, auth=tokens.auth_yaml))
        release = Authority(name="release", kind="key", public_key=pub.read_text())
        yield Private(
            basic, token, tokens, image.partition("@")[2], model, release, work, signed, plan, tampered, tampered_plan
        )


def signed_model(pusher: OciModel, host: str, work: Path, repository: str, weights: bytes = b"") -> tuple[str, str]:
    """A model signed with a fresh key, pushed as an OCI artifact to ``repository``; its path (repository@digest)
    and the verification plan the operator would render for a policy trusting that key."""
    folder = work / repository.replace("/", "-")
    folder.mkdir()
    key = make_key(folder)
    files = make_model(folder / "model", {"weights.bin": weights, "config.json": b"{}"} if weights else None)
    bundle = sign_with_key(files, key, folder / "model.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key.public_pem)).digest
    policy = compile_policy(
        {
            "metadata": {"name": "team"},
            "spec": {"authorities": [{"name": "team", "key": {"publicKey": key.public_pem}}]},
        }
    )
    uri = pusher.push(host, repository, "1", files)
    return uri.removeprefix(f"oci://{host}/"), VerificationPlan.for_policies(bundle, digest, [policy]).to_json()


def tamper_blob(storage: Path, content: bytes) -> None:
    """Change one byte of the stored blob holding ``content`` (team/tampered's weights only), in place and at its
    length: the registry serves the changed bytes under the digest they had (what a compromised registry, or its
    storage, can do)."""
    blob = storage / "docker/registry/v2/blobs/sha256" / hashlib.sha256(content).hexdigest()[:2]
    data = blob / hashlib.sha256(content).hexdigest() / "data"
    changed = bytearray(data.read_bytes())
    changed[0] ^= 0xFF
    data.write_bytes(bytes(changed))


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


def storage_initializer(
    private: Private, host: str, path: str, plan: str, served: Path, credentials: dict[str, dict[str, str]] | None
) -> subprocess.CompletedProcess[str]:
    """The real `devmlops storage-initializer devmlops+oci://... /mnt/models` with what the Pod gives it: the plan,
    the registries read over plain HTTP (loopback), and the team's Secret as DEVMLOPS_REGISTRY_AUTH when the
    namespace has one (``credentials``: its .dockerconfigjson's auths), unset when not (the optional secretKeyRef)."""
    realm_host = private.tokens.realm.split("/")[2]
    env = {k: v for k, v in os.environ.items() if k not in (ENV_PLAN, REGISTRY_AUTH_ENV)}
    env |= {ENV_PLAN: plan, "DEVMLOPS_OCI_PLAIN_HTTP": f"{host},{realm_host}"}
    if credentials is not None:
        env[REGISTRY_AUTH_ENV] = json.dumps({"auths": credentials})
    return subprocess.run(
        [sys.executable, "-m", "devmlops", "storage-initializer", f"devmlops+oci://{host}/{path}", str(served)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("registry", ["basic", "token"])
def test_the_storage_initializer_pulls_a_private_model_with_the_teams_credentials_and_verifies_it(
    private: Private, registry: str, tmp_path: Path
) -> None:
    host = getattr(private, registry)
    done = storage_initializer(
        private, host, private.signed, private.plan, tmp_path / "served", {host: user_pass(USER, PASSWORD)}
    )
    assert done.returncode == 0, done.stderr
    assert "devmlops: 2 files of model match sha256:" in done.stdout
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == ["config.json", "weights.bin"]


@pytest.mark.parametrize("registry", ["basic", "token"])
def test_without_the_teams_secret_the_storage_initializer_fails_saying_which_secret_to_create(
    private: Private, registry: str, tmp_path: Path
) -> None:
    host = getattr(private, registry)
    done = storage_initializer(private, host, private.signed, private.plan, tmp_path / "served", None)
    assert done.returncode != 0
    assert f"registry {host} requires credentials (" in done.stderr
    assert "the model's namespace has no Secret devmlops-registry-auth with a .dockerconfigjson for it" in done.stderr
    assert not list((tmp_path / "served").rglob("*.bin"))


@pytest.mark.parametrize("registry", ["basic", "token"])
def test_with_wrong_team_credentials_the_storage_initializer_fails_naming_the_registry_that_refused_them(
    private: Private, registry: str, tmp_path: Path
) -> None:
    host = getattr(private, registry)
    wrong = {host: user_pass(USER, "wrong")}
    done = storage_initializer(private, host, private.signed, private.plan, tmp_path / "served", wrong)
    assert done.returncode != 0
    assert f"registry {host}" in done.stderr
    assert "refused the credentials the Secret devmlops-registry-auth of the model's namespace" in done.stderr
    assert not list((tmp_path / "served").rglob("*.bin"))


def test_a_team_secret_for_another_registry_only_reads_nothing_here(private: Private, tmp_path: Path) -> None:
    """Credentials are by registry host: an entry for another registry is no entry for this one."""
    elsewhere = {"registry.example": user_pass(USER, PASSWORD)}
    done = storage_initializer(private, private.basic, private.signed, private.plan, tmp_path / "served", elsewhere)
    assert done.returncode != 0
    assert f"registry {private.basic} requires credentials" in done.stderr
    assert "the Secret devmlops-registry-auth of the model's namespace (DEVMLOPS_REGISTRY_AUTH) has no entry" in (
        done.stderr
    )


@pytest.mark.parametrize("registry", ["basic", "token"])
def test_with_the_teams_credentials_a_tampered_blob_still_fails_and_nothing_is_served(
    private: Private, registry: str, tmp_path: Path
) -> None:
    """Credentials change who may read, never what is accepted: a blob whose bytes changed in the registry's storage
    fails its digest check with the team's credentials as without."""
    host = getattr(private, registry)
    good = {host: user_pass(USER, PASSWORD)}
    done = storage_initializer(private, host, private.tampered, private.tampered_plan, tmp_path / "served", good)
    assert done.returncode != 0
    weights = "sha256:" + hashlib.sha256(TAMPERED_WEIGHTS).hexdigest()
    assert f"blob {weights}: the bytes received hash to sha256:" in done.stderr
    assert not (tmp_path / "served" / "weights.bin").exists()
