"""Evidence Secrets are read only in the namespaces the installation allows (the chart's evidence.secretNamespaces),
so the webhook never needs to read Secrets cluster-wide; a reference outside them is denied with that reason."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from devmlops.adapters.evidence import resolve_source
from devmlops.adapters.kubecache import ClusterCaches
from devmlops.errors import EvidenceUnavailableError

REF = {"secretKeyRef": {"name": "evidence", "key": "model.sig"}}


def test_with_no_secret_namespaces_a_secret_reference_is_refused_with_the_reason() -> None:
    caches = ClusterCaches(k8s.ApiClient(), secret_namespaces=())
    assert caches.secret_caches == {}
    document = resolve_source(REF, "team-a", caches, field="spec.signature")
    assert document.text is None
    assert "reads evidence Secrets in no namespace" in document.error
    assert "ConfigMap labelled devmlops.io/evidence=true" in document.error


def test_listed_namespaces_are_watched_one_by_one_and_others_refused() -> None:
    caches = ClusterCaches(k8s.ApiClient(), secret_namespaces=("team-a", "team-b"))
    assert sorted(caches.secret_caches) == ["team-a", "team-b"]
    assert caches.secret("team-a", "evidence") is None  # allowed, just not there (the cache is empty)
    with pytest.raises(EvidenceUnavailableError, match="only in: team-a, team-b"):
        caches.secret("team-c", "evidence")


def test_by_default_every_namespace_is_watched_through_one_cluster_wide_cache() -> None:
    caches = ClusterCaches(k8s.ApiClient())
    assert list(caches.secret_caches) == [""]
    assert caches.secret("anywhere", "evidence") is None


def test_cached_objects_drop_managed_fields_and_bookkeeping_annotations_but_keep_ours() -> None:
    from devmlops.adapters.kubecache import trimmed

    obj = {
        "metadata": {
            "name": "m",
            "managedFields": [{"manager": "kopf", "fieldsV1": {"f:spec": {}}}],
            "annotations": {
                "kopf.zalando.org/last-handled-configuration": '{"spec": {}}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "devmlops.io/requested-by": "alice",
            },
        },
        "spec": {"model": {"name": "m"}},
    }
    kept = trimmed(obj)
    assert kept["metadata"] == {"name": "m", "annotations": {"devmlops.io/requested-by": "alice"}}
    assert kept["spec"] is obj["spec"]
    assert "managedFields" in obj["metadata"]  # the original is left alone


def test_evidence_config_maps_too_are_read_only_in_the_listed_namespaces() -> None:
    caches = ClusterCaches(k8s.ApiClient(), config_map_namespaces=("team-a",))
    assert list(caches.config_map_caches) == ["team-a"]
    assert caches.config_map("team-a", "evidence") is None  # allowed; the (unstarted) cache is empty
    document = resolve_source({"configMapKeyRef": {"name": "evidence", "key": "m"}}, "team-b", caches, field="f")
    assert document.text is None
    assert "reads evidence ConfigMaps only in: team-a" in document.error
    assert list(ClusterCaches(k8s.ApiClient()).config_map_caches) == [""]  # by default one cluster-wide cache
