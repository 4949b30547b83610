"""Cache regressions of the kinds peers shipped, through the real API server and webhook: a cached pass must not
carry over to a changed digest or storage URI, and no deny rule may be skipped because the signature was a cache
hit. (A transient error is never cached: tests/unit/adapters/test_verifycache.py, and OPA killed and restarted in
test_faults.py.) Each case asserts that the verification cache was in fact hit, so the test cannot pass by a miss."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import denial_message
from devmlops.adapters.kubecache import ClusterCaches
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import SignedModel, create_md, signed_by_evidence, signed_model, trusting


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("cache"), "fraud")


@pytest.fixture
def warm(admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel) -> Iterator[str]:
    """A policy, the evidence, and one admitted ModelDeployment: the bundle's verification is now cached."""
    with trusting(
        admin,
        stack,
        namespace,
        model,
        policy=f"cache-{namespace}",
        allow={"storageUris": ["s3://models/**"]},
        compliance={"requireRiskLabel": False, "tiers": {"prohibited": {"deny": True}}},
    ):
        create_md(admin, namespace, signed("warm", model))
        yield namespace


def signed(name: str, model: SignedModel, **fields: object) -> dict[str, Any]:
    doc = signed_by_evidence(name, model)
    doc["spec"]["model"].update(fields)
    return doc


def cache_hits(stack: DevmlopsStack) -> float:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with urllib.request.urlopen(f"{stack.webhook_url}/metrics", context=context, timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    prefix = 'devmlops_verification_cache_events_total{event="hit"}'
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(prefix))  # 0 before the first hit


def denial(admin: k8s.ApiClient, namespace: str, doc: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        create_md(admin, namespace, doc)
    assert caught.value.status == 403
    return denial_message(caught.value)


def test_another_digest_is_not_admitted_on_a_cached_pass(
    admin: k8s.ApiClient, stack: DevmlopsStack, warm: str, model: SignedModel
) -> None:
    before = cache_hits(stack)
    message = denial(admin, warm, signed("other-digest", model, digest="sha256:" + "e" * 64))
    assert "spec.model.digest: got sha256:eeee" in message
    assert f"signs {model.digest[:19]}" in message
    assert cache_hits(stack) > before, "the bundle's verification came from the cache"


def test_another_storage_uri_is_not_admitted_on_a_cached_pass(
    admin: k8s.ApiClient, stack: DevmlopsStack, warm: str, model: SignedModel
) -> None:
    before = cache_hits(stack)
    message = denial(admin, warm, signed("other-uri", model, uri="s3://scratch/fraud"))
    assert "allowlist gate" in message
    assert "spec.model.uri: got 's3://scratch/fraud'" in message
    assert cache_hits(stack) > before


def test_a_deny_rule_still_applies_on_a_cache_hit(
    admin: k8s.ApiClient, stack: DevmlopsStack, warm: str, model: SignedModel
) -> None:
    before = cache_hits(stack)
    prohibited = signed("prohibited", model)
    prohibited["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "prohibited"}
    assert "risk tier prohibited: the policy never admits this tier" in denial(admin, warm, prohibited)
    assert cache_hits(stack) > before
    # And the same request without the label is admitted from the same cache entry.
    create_md(admin, warm, signed("allowed-again", model))


def test_a_model_deployment_the_watch_has_not_delivered_is_read_from_the_api_server_once(
    admin: k8s.ApiClient, warm: str
) -> None:
    """An approval written right after its ModelDeployment (or the first child of one) must not be refused because
    the webhook's watch is a moment behind: a miss reads the API server. Here no watch runs at all."""
    caches = ClusterCaches(admin)  # never started: every lookup is a miss
    found = caches.model_deployment(warm, "warm")
    assert found is not None
    assert found["spec"]["model"]["uri"].startswith("s3://models/")
    assert found["metadata"]["namespace"] == warm
    assert caches.model_deployment(warm, "absent") is None
