"""The canary's Service by its absolute name (guard/clusterdns.py): the rendered ``<md>-canary.<ns>.svc`` upstream
becomes ``...svc.<domain>.``, with the domain the kubelet wrote into the Pod's resolv.conf, so that no name the search
path tries first (a Service of the model's namespace or of a namespace named ``svc``) can answer for it."""

from __future__ import annotations

import pytest

from devmlops.core.guard import Split
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.render import canary_upstream
from devmlops.guard.clusterdns import absolute_split, cluster_domain
from tests.unit.operator.test_rollout import md

KUBELET = "search ml.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"


def test_the_rendered_canary_upstream_becomes_absolute_in_the_kubelets_cluster_domain() -> None:
    rendered = Split(upstream=canary_upstream(parse_model_deployment(md())), weight=10)
    assert absolute_split(rendered, KUBELET) == Split("http://fraud-canary.ml.svc.cluster.local.:8000", 10)


@pytest.mark.parametrize(
    ("resolv_conf", "domain"),
    [
        (KUBELET, "cluster.local"),
        ("search ml.svc.corp.example svc.corp.example corp.example\n", "corp.example"),
        ("search svc.Cluster.Local.\n", "cluster.local"),  # a final dot and capitals are the same domain
        ("search old.example\nsearch ml.svc.k8s.internal svc.k8s.internal\n", "k8s.internal"),  # the last line counts
        ("search svc.one.example\nsearch other.example\n", None),
        ("nameserver 10.0.0.1\n", None),
        ("", None),
        ("search svc.\n", None),
        ("search svc.bad_domain!\n", None),
        ("# search svc.cluster.local\n", None),
    ],
)
def test_the_cluster_domain_is_the_svc_entry_of_the_last_search_line(resolv_conf: str, domain: str | None) -> None:
    assert cluster_domain(resolv_conf) == domain


@pytest.mark.parametrize(
    "upstream",
    [
        "http://10.0.0.7:8000",  # an address: nothing to search
        "http://fraud-canary.ml.svc.cluster.local.:8000",  # already absolute
        "http://fraud-canary.ml.svc.cluster.local:8000",  # four dots, not the rendered form: left to its owner
        "http://fraud-canary:8000",
    ],
)
def test_any_other_upstream_is_left_as_it_is(upstream: str) -> None:
    split = Split(upstream=upstream, weight=50)
    assert absolute_split(split, KUBELET) is split


def test_without_a_cluster_domain_or_a_split_nothing_changes() -> None:
    split = Split(upstream="https://fraud-canary.ml.svc", weight=5)
    assert absolute_split(split, "nameserver 1.1.1.1\n") is split
    assert absolute_split(None, KUBELET) is None
    assert absolute_split(split, KUBELET) == Split("https://fraud-canary.ml.svc.cluster.local.", 5)


def test_in_a_namespace_named_svc_the_domain_is_not_taken_from_the_namespaces_own_search_entry() -> None:
    """The kubelet writes ``svc.svc.cluster.local svc.cluster.local cluster.local`` for a Pod of the namespace "svc",
    whose first entry also starts with "svc.": the domain was read as "svc.cluster.local", and the canary asked for
    as ``fraud-canary.svc.svc.svc.cluster.local.``, which CoreDNS answers as the endpoint "fraud-canary" of a headless
    Service "svc" in the namespace "svc": a Service and an EndpointSlice (her address, hostname fraud-canary) that
    the model's namespace editor writes, no model's address, so the rollout's share went to her (round 3 review)."""
    resolv = "search svc.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    split = Split(upstream="http://fraud-canary.svc.svc:8000", weight=10)
    assert absolute_split(split, resolv) == Split("http://fraud-canary.svc.svc.cluster.local.:8000", 10)
    assert cluster_domain(resolv, namespace="svc") == "cluster.local"
    # Any namespace: the domain is the one whose <namespace>.svc.<domain> entry the kubelet wrote beside svc.<domain>.
    assert cluster_domain("search ml.svc.corp.example svc.svc.example svc.corp.example\n", namespace="ml") == (
        "corp.example"
    )
    # No kubelet triple in the namespace "svc": its one "svc." entry may be its own; the name is left as written.
    assert cluster_domain("search svc.svc.cluster.local\n", namespace="svc") is None
