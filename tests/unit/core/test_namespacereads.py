"""core/namespacereads.py: the references by name a model server's pod spec makes to objects of its namespace."""

from __future__ import annotations

from typing import Any

import pytest

from devmlops.core.namespacereads import namespace_reads


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "server", "image": "registry.local/server@sha256:" + "1" * 64, **fields}


def test_what_comes_from_the_pod_itself_is_no_read() -> None:
    spec = {
        "containers": [
            container(
                env=[
                    {"name": "A", "value": "1"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                ]
            )
        ],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "meta", "downwardAPI": {"items": []}},
            {"name": "plugins", "image": {"reference": "registry.local/p@sha256:" + "2" * 64}},
            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}, {"downwardAPI": {}}]}},
        ],
    }
    assert namespace_reads(spec, "spec") == []
    assert namespace_reads({}, "spec") == []


@pytest.mark.parametrize("part", ["initContainers", "containers", "ephemeralContainers"])
def test_every_environment_source_of_the_namespace_is_named_in_every_container_kind(part: str) -> None:
    env = [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}},
    ]
    spec = {part: [container(env=env, envFrom=[{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "s"}}])]}
    assert [p.split(":")[0] for p in namespace_reads(spec, "spec.template.spec")] == [
        f"spec.template.spec.{part}[0].envFrom[0]",
        f"spec.template.spec.{part}[0].envFrom[1]",
        f"spec.template.spec.{part}[0].env[0].valueFrom.configMapKeyRef",
        f"spec.template.spec.{part}[0].env[1].valueFrom.secretKeyRef",
    ]


@pytest.mark.parametrize(
    "volume",
    [
        {"configMap": {"name": "settings"}},
        {"secret": {"secretName": "s"}},
        {"persistentVolumeClaim": {"claimName": "cache"}},
        {"ephemeral": {"volumeClaimTemplate": {"spec": {"dataSourceRef": {"kind": "PersistentVolumeClaim"}}}}},
        {"nfs": {"server": "10.0.0.1", "path": "/"}},
        {"csi": {"driver": "secrets-store.csi.k8s.io"}},
        {"somethingNew": {}},
        {},
        {"emptyDir": {}, "configMap": {"name": "both"}},
    ],
)
def test_any_other_volume_is_a_read_and_named_by_its_index(volume: dict[str, Any]) -> None:
    spec = {"volumes": [{"name": "ok", "emptyDir": {}}, {"name": "v", **volume}]}
    problems = namespace_reads(spec, "spec")
    assert len(problems) == 1
    assert problems[0].startswith("spec.volumes[1]: a ")


def test_a_projected_volume_may_project_only_tokens_the_downward_api_and_cluster_trust_bundles() -> None:
    sources = [{"serviceAccountToken": {"path": "t"}}, {"configMap": {"name": "c"}}, {"secret": {"name": "s"}}, {}]
    problems = namespace_reads({"volumes": [{"name": "p", "projected": {"sources": sources}}]}, "spec")
    assert [p.split(":")[0] for p in problems] == [
        "spec.volumes[0].projected.sources[1]",
        "spec.volumes[0].projected.sources[2]",
        "spec.volumes[0].projected.sources[3]",
    ]
