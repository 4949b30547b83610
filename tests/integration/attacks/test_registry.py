"""Registered models, attacked by the namespace editor (mallory) through the API server and the registered webhook,
with a real MLflow tracking server as the registry the cluster admins configured (``--mlflow-tracking-uri`` on the
webhook and the operator).

The registry is shared: mallory may register versions, move aliases and edit tags there too. What must hold:
a ModelDeployment that names a registered version serves exactly that version's storage location and signed
digest; a policy's alias and tag demands cannot be side-stepped by naming a version number, by leaving the registry
out, or by pointing an alias at a version mallory signed. Each attack here but the moved alias was admitted with the
registry gate taken out of decide() (the moved alias is the signature gate's: her version carries her signature), and
the positive control then had no status.registryVersion (docs/threat-model.md, property 12)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.mlflowsign import RegisteredVersion, store_signature
from devmlops.harness.mlflow import mlflow_server
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import admitted, denied, policy_name
from tests.integration.attacks.conftest import create_model_deployment as create
from tests.integration.support import GROUP, VERSION, SignedModel, eventually, model_deployment, trusting

# A cold cache builds the registries first (`make registries` does it before `make test`).
pytestmark = pytest.mark.timeout(900)

GOOD_URI = "s3://models-prod/fraud/1"  # where the registered, signed version is stored
OLD_URI = "s3://models-prod/fraud/0"  # an older version, signed by the same key, never promoted
ROGUE_URI = "s3://mallory/fraud"  # mallory's bucket


@dataclass(frozen=True)
class Registry:
    url: str
    client: Any


@pytest.fixture(scope="module")
def registry(
    stack: DevmlopsStack,
    attack_model: SignedModel,
    rogue_model: SignedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Registry]:
    """MLflow with model "fraud": version 1 (the trusted signer's, alias champion), version 2 (the same signed
    bytes under an old location, no alias), version 3 (mallory's bytes, signed by her key); the webhook and the
    operator run against it for this module."""
    from mlflow import MlflowClient

    with mlflow_server(tmp_path_factory.mktemp("mlflow-attacks")) as url:
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        client.create_registered_model("fraud")
        for version, uri, model in (("1", GOOD_URI, attack_model), ("2", OLD_URI, attack_model)):
            client.create_model_version("fraud", source=uri)
            store_signature(url, RegisteredVersion("fraud", version, uri), bundle=model.bundle, digest=model.digest)
        client.create_model_version("fraud", source=ROGUE_URI)
        store_signature(
            url, RegisteredVersion("fraud", "3", ROGUE_URI), bundle=rogue_model.bundle, digest=rogue_model.digest
        )
        client.set_registered_model_alias("fraud", "champion", "1")
        stack.restart_with(["--mlflow-tracking-uri", url, "--registry-cache-seconds", "0"])
        try:
            yield Registry(url, client)
        finally:
            stack.restart_with([])


def registered(name: str, digest: str, uri: str, **mlflow: str) -> dict[str, Any]:
    """A ModelDeployment naming registered model "fraud" (no spec.signature: the version's tag is the signature)."""
    body = model_deployment(name, digest, uri=uri)
    body["spec"]["model"]["name"] = "fraud"
    body["spec"]["model"]["registry"] = {"mlflow": {"name": "fraud", **mlflow}}
    return body


@pytest.fixture
def champion_policy(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel
) -> Iterator[dict[str, Any]]:
    """Trusts the attack model's key for the namespace, and demands models by alias champion, never quarantined."""
    with trusting(
        admin,
        stack,
        enforced_namespace,
        attack_model,
        policy=policy_name(enforced_namespace),
        registry={"requiredAliases": ["champion"], "forbiddenTags": ["quarantine=true"]},
    ) as body:
        yield body


def test_the_champion_is_admitted_served_and_its_version_recorded_in_status(
    registry: Registry,
    champion_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """The positive control: named by alias, stored where the registry says, signed digest; the operator renders
    the child from the bundle in the version's tag and records the resolved version."""
    admitted(create, mallory, enforced_namespace, registered("champ", attack_model.digest, GOOD_URI, alias="champion"))
    api = k8s.CustomObjectsApi(admin)

    def recorded() -> str:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, enforced_namespace, "modeldeployments", "champ")
        return str((obj.get("status") or {}).get("registryVersion") or "")

    status = eventually(recorded, timeout=30, what="status.registryVersion written by the operator")
    assert status == (
        f"MLflow {registry.url}: model 'fraud' alias champion (version 1): stored at '{GOOD_URI}', "
        f"digest {attack_model.digest}"
    )


def test_naming_the_champion_but_serving_other_bytes_is_denied(
    registry: Registry,
    champion_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """The signed digest and the alias are right; the storage URI is mallory's bucket."""
    message = denied(
        create, mallory, enforced_namespace, registered("swap", attack_model.digest, ROGUE_URI, alias="champion")
    )
    assert f"spec.model.uri: got '{ROGUE_URI}', expected '{GOOD_URI}', where MLflow {registry.url}: model " in message
    assert "'fraud' alias champion (version 1) is stored" in message


def test_a_signed_version_that_is_not_the_champion_cannot_be_named_by_number(
    registry: Registry,
    champion_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    message = denied(create, mallory, enforced_namespace, registered("old", attack_model.digest, OLD_URI, version="2"))
    assert "spec.model.registry.mlflow: got version 2, expected one of the aliases ['champion']" in message


def test_leaving_the_registry_out_is_denied_where_the_policy_demands_it(
    registry: Registry,
    champion_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    body = model_deployment("bare", attack_model.digest, uri=OLD_URI)
    body["spec"]["signature"] = {"configMapKeyRef": {"name": "evidence", "key": "model.sig"}}
    message = denied(create, mallory, enforced_namespace, body)
    assert "spec.model.registry: missing, expected a registered model version by one of the aliases" in message


def test_pointing_the_alias_at_her_own_version_is_still_denied(
    registry: Registry,
    champion_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    rogue_model: SignedModel,
) -> None:
    """Mallory can move the alias in the shared registry; her version's signature is hers, which nobody trusts."""
    registry.client.set_registered_model_alias("fraud", "champion", "3")
    try:
        message = denied(
            create, mallory, enforced_namespace, registered("moved", rogue_model.digest, ROGUE_URI, alias="champion")
        )
    finally:
        registry.client.set_registered_model_alias("fraud", "champion", "1")
    assert "signature gate" in message


def test_a_quarantined_champion_is_denied(
    registry: Registry,
    champion_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    registry.client.set_model_version_tag("fraud", "1", "quarantine", "true")
    try:
        message = denied(
            create, mallory, enforced_namespace, registered("quar", attack_model.digest, GOOD_URI, alias="champion")
        )
    finally:
        registry.client.delete_model_version_tag("fraud", "1", "quarantine")
    assert "(version 1): carries the tag 'quarantine=true', which policy" in message


def test_quarantining_the_running_champion_degrades_it_at_the_next_decision(
    registry: Registry,
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
) -> None:
    """The security team tags the served version quarantine=true in the registry and forbids that tag in the
    policy: the operator decides the running model again at once (a policy change) and degrades it, naming the
    registry, the version and the tag."""
    with trusting(admin, stack, enforced_namespace, attack_model, policy=policy_name(enforced_namespace)) as policy:
        admitted(create, admin, enforced_namespace, registered("run", attack_model.digest, GOOD_URI, alias="champion"))
        api = k8s.CustomObjectsApi(admin)

        def phase() -> tuple[str, str]:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, enforced_namespace, "modeldeployments", "run")
            status = obj.get("status") or {}
            degraded = [c for c in status.get("conditions") or [] if c.get("type") == "Degraded"]
            return str(status.get("phase") or ""), str(degraded[0].get("message") or "") if degraded else ""

        eventually(lambda: phase()[0] == "Admitted", timeout=30, what="the champion admitted and served")
        registry.client.set_model_version_tag("fraud", "1", "quarantine", "true")
        try:
            name = policy["metadata"]["name"]
            patch = {"spec": {"registry": {"forbiddenTags": ["quarantine=true"]}}}
            api.patch_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", name, patch)
            eventually(lambda: phase()[0] == "Degraded", timeout=30, what="the quarantined champion degraded")
        finally:
            registry.client.delete_model_version_tag("fraud", "1", "quarantine")
    assert "model 'fraud' alias champion (version 1): carries the tag 'quarantine=true'" in phase()[1]
