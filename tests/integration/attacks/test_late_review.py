"""The late attack review (properties 10, 12, 14 and 15): what a namespace editor (mallory) can still try with signed
evidence she collected, with the shared model registry and with a rollout in progress, through the real API server,
webhook, operator, OPA and MLflow.

Evidence and rollout: attacks devmlops already refuses, written to look for holes and kept so the refusal stays. A
genuine attestation whose timestamp is written in another time zone, so that its digits read earlier than the
webhook's UTC clock while the instant is in the future, or a timestamp at the end of time (the newest attestation
that counts is the one judged in Rego, so a future stamp would win that choice for as long as it lasts), is denied
as in the future. Changing ``spec.rollout`` in the middle of a rollout to ask for nearly all of the traffic at once
never gives a share to a version that is not ready: the new generation starts the rollout again at no share. An
image written with a tag beside its digest is checked by the digest, which is what the kubelet pulls.

Registry: a residual risk, shown as it behaves (admitted) so that docs/threat-model.md stays true: a policy's
``requiredAliases`` bind only against people who cannot write the registry.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.adapters.mlflowsign import RegisteredVersion, store_signature
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import Served, admitted, denied
from tests.integration.attacks.conftest import create_model_deployment as create
from tests.integration.attacks.test_evidence import deployment, good, keys, model, policy, signed
from tests.integration.attacks.test_image_signatures import Images, images, images_policy, triton
from tests.integration.attacks.test_registry import Registry, champion_policy, registered, registry
from tests.integration.attacks.test_rollout import _deployment, _guard_config, _second_version, rolling_out
from tests.integration.support import GROUP, VERSION, SignedModel, eventually
from tests.support.models import KeyFiles

# MLflow and the registries are built on a cold cache first (`make registries` does it before `make test`).
pytestmark = pytest.mark.timeout(900)

# Fixtures of the modules they come from, used here under the same names.
__all__ = ["champion_policy", "images", "keys", "model", "policy", "registry", "rolling_out"]


def _in_another_zone(instant: dt.datetime, hours: int) -> str:
    """``instant`` written in the zone UTC``-hours``: the same moment, other digits."""
    zone = dt.timezone(dt.timedelta(hours=-hours))
    return instant.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S") + f"-{hours:02d}:00"


@pytest.mark.parametrize(
    "stamp",
    [
        pytest.param(lambda: _in_another_zone(dt.datetime.now(dt.UTC) + dt.timedelta(hours=3), 5), id="west-zone"),
        pytest.param(lambda: "9999-12-31T23:59:59Z", id="far-future"),
    ],
)
def test_a_genuine_attestation_stamped_in_the_future_is_denied_whatever_its_zone(
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    policy: str,
    model: SignedModel,
    keys: dict[str, KeyFiles],
    stamp: Any,
) -> None:
    """The evaluators' key signed a fairness attestation of this model whose timestamp lies ahead: three hours
    ahead written at UTC-05:00 (its clock digits are two hours behind the webhook's UTC ones, so a comparison of
    the strings would take it for a recent one), or at the end of time. Both are in the future, and denied so."""
    written = stamp()
    ahead = signed("fairness", model.digest, keys["evaluators"], timestamp=written)
    message = denied(create, mallory, enforced_namespace, deployment(model, ahead, good(model, keys)[1]))
    assert f"spec.attestations[0]: timestamp {written} is in the future" in message


def test_changing_the_rollout_mid_way_gives_no_share_to_a_version_that_is_not_ready(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, rolling_out: Served
) -> None:
    """The new version is tried beside the stable one and is not ready (its share is 0). Mallory rewrites
    spec.rollout to ask for 99 % at the first step, steps of five seconds: the new generation starts the rollout
    again, at step -1 and no share, and the stable version's guard forwards nothing to the canary Service."""
    namespace = rolling_out.namespace
    custom = k8s.CustomObjectsApi(mallory)
    rollout = {"strategy": "canary", "canary": {"trafficPercent": 99, "stepSeconds": 5, "readySeconds": 600}}
    changed = admitted(custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, "modeldeployments", "fraud",
                       {"spec": {"rollout": rollout}})  # fmt: skip
    generation = changed["metadata"]["generation"]

    def restarted() -> dict[str, Any] | None:
        found = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments", "fraud"
        )
        record = (found.get("status") or {}).get("rollout") or {}
        return record if record.get("generation") == generation else None

    record = eventually(restarted, timeout=60, what="the rollout status of the new generation")
    assert (record["phase"], record["step"], record["weight"]) == ("Progressing", -1, 0)
    stable = _deployment(admin, namespace, "fraud")
    assert stable is not None
    _, config = _guard_config(stable)
    assert not config.get("split"), json.dumps(config.get("split"))


def test_moving_the_alias_to_an_older_signed_version_is_admitted_residual(
    registry: Registry,
    champion_policy: dict[str, Any],
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    tmp_path: Path,
) -> None:
    """A residual risk, shown (docs/threat-model.md, "Registry aliases and tags"): the policy demands alias champion,
    and mallory, who may write the shared registry, moves champion to an older release the trusted key signed but
    nobody promoted (other bytes, its own signature and digest tags). It is admitted: the registry gate trusts the
    registry for aliases and tags, and the signature holds. What runs is still what the trusted key signed; which
    of its signed versions runs is the registry writers' choice."""
    bundle, digest = _second_version(tmp_path, attack_model)
    assert digest != attack_model.digest
    uri = "s3://models-prod/fraud/older"
    made = registry.client.create_model_version("fraud", source=uri)
    store_signature(registry.url, RegisteredVersion("fraud", str(made.version), uri), bundle=bundle, digest=digest)
    registry.client.set_registered_model_alias("fraud", "champion", str(made.version))
    try:
        admitted(create, mallory, enforced_namespace, registered("older", digest, uri, alias="champion"))
    finally:
        registry.client.set_registered_model_alias("fraud", "champion", "1")


@pytest.fixture
def tag_glob_policy(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel, images: Images
) -> Iterator[dict[str, Any]]:
    """Image signatures demanded, and an allow-list glob that also takes a tag written beside the digest."""
    with images_policy(admin, stack, enforced_namespace, attack_model, images, triton_glob="*") as body:
        yield body


def test_a_signed_tag_written_beside_an_unsigned_digest_signs_nothing(
    images: Images, tag_glob_policy: dict[str, Any], mallory: k8s.ApiClient, enforced_namespace: str,
    attack_model: SignedModel,
) -> None:  # fmt: skip
    """Property 14: ``repo:24.08@sha256:<unsigned>``, where tag 24.08 names the platform's signed image. The kubelet
    pulls the digest and ignores the tag, so the digest must be what is checked: denied for want of a signature on
    it, and the same tag beside the signed digest is admitted (the control). The mutating webhook leaves a reference
    with a digest as written (nothing to pin)."""
    repository = images.signed.partition("@")[0]
    unsigned = f"{repository}:24.08@{images.unsigned.partition('@')[2]}"
    message = denied(create, mallory, enforced_namespace, triton("tagged", attack_model, unsigned))
    assert f"spec.runtime.image '{unsigned}': got no signature attached" in message
    signed = f"{repository}:24.08@{images.signed.partition('@')[2]}"
    made = admitted(create, mallory, enforced_namespace, triton("tagged", attack_model, signed))
    assert made["spec"]["runtime"]["image"] == signed
