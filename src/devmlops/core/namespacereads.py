"""What a model server would read from its own namespace: the ConfigMaps, Secrets and volume claims there are the
namespace editor's to write.

A cluster admin's ClusterServingRuntime is merged by KServe into each model's predictor Deployment, in the model's
namespace; a reference by name in it (``envFrom``, ``env[].valueFrom.configMapKeyRef``/``secretKeyRef``, a
``configMap``, ``secret``, ``persistentVolumeClaim`` or ``projected`` volume, a generic ephemeral volume cloned from a
claim) resolves to an object the namespace's editors write. Their ConfigMap mounted into MLServer's settings
directory, or on its PYTHONPATH, is code the model server runs that nobody signed; their environment variable,
expanded into the server's arguments (``$(VAR)``), chooses what it loads. So a model server's pod spec reads nothing
from its namespace but what devmlops renders itself (the storage initializer's registry Secret, checked in
core/storageinit.py). Allowed volumes are the ones whose content comes from the Pod itself: ``emptyDir``,
``downwardAPI`` (the Pod's own metadata, which editors cannot change on a model server's Pod), ``image`` (an image,
pinned and allow-listed like any other) and ``projected`` service account tokens, downward API and cluster trust
bundles (cluster-scoped). Anything else, or unknown, is refused, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.podspec import containers, items, mapping

__all__ = ["namespace_reads"]

_OWN_VOLUMES = frozenset({"emptyDir", "downwardAPI", "image"})
_OWN_PROJECTIONS = frozenset({"serviceAccountToken", "downwardAPI", "clusterTrustBundle"})
_EXPECTED = "expected nothing read from the model's namespace, which its editors write"


def _container_reads(container: Any, path: str) -> list[str]:
    container = mapping(container)
    problems = [
        f"{path}.envFrom[{index}]: {dict(source)!r}, {_EXPECTED}"
        for index, source in enumerate(items(container.get("envFrom")))
    ]
    for index, variable in enumerate(items(container.get("env"))):
        source = mapping(mapping(variable).get("valueFrom"))
        problems += [
            f"{path}.env[{index}].valueFrom.{key}: {dict(mapping(source[key]))!r}, {_EXPECTED}"
            for key in ("configMapKeyRef", "secretKeyRef")
            if key in source
        ]
    return problems


def _volume_reads(volume: Any, path: str) -> list[str]:
    volume = mapping(volume)
    kinds = sorted(str(key) for key in volume if key != "name")
    if kinds == ["projected"]:
        sources = items(mapping(volume["projected"]).get("sources"))
        return [
            f"{path}.projected.sources[{index}]: {sorted(mapping(source))}, expected only "
            f"{sorted(_OWN_PROJECTIONS)} ({_EXPECTED})"
            for index, source in enumerate(sources)
            if not set(mapping(source)) or not set(mapping(source)) <= _OWN_PROJECTIONS
        ]
    if len(kinds) == 1 and kinds[0] in _OWN_VOLUMES:
        return []
    return [
        f"{path}: a {'/'.join(kinds) or 'volume of no kind'} volume, expected one of {sorted(_OWN_VOLUMES)} or "
        f"projected tokens ({_EXPECTED})"
    ]


def namespace_reads(pod_spec: Mapping[str, Any], where: str) -> list[str]:
    """The references by name in a pod spec (at field path ``where``) to objects of its namespace; empty if none."""
    problems: list[str] = []
    for container, path in containers(pod_spec, where):
        problems += _container_reads(container, path)
    for index, volume in enumerate(items(pod_spec.get("volumes"))):
        problems += _volume_reads(volume, f"{where}.volumes[{index}]")
    return problems
