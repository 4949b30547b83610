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

__all__ = ["namespace_reads"]

_OWN_VOLUMES = frozenset({"emptyDir", "downwardAPI", "image"})
_OWN_PROJECTIONS = frozenset({"serviceAccountToken", "downwardAPI", "clusterTrustBundle"})
_CONTAINER_PARTS = ("initContainers", "containers", "ephemeralContainers")
_EXPECTED = "expected nothing read from the model's namespace, which its editors write"


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _container_reads(container: Any, path: str) -> list[str]:
    container = _mapping(container)
    problems = [
        f"{path}.envFrom[{index}]: {dict(source)!r}, {_EXPECTED}"
        for index, source in enumerate(_items(container.get("envFrom")))
    ]
    for index, variable in enumerate(_items(container.get("env"))):
        source = _mapping(_mapping(variable).get("valueFrom"))
        problems += [
            f"{path}.env[{index}].valueFrom.{key}: {dict(_mapping(source[key]))!r}, {_EXPECTED}"
            for key in ("configMapKeyRef", "secretKeyRef")
            if key in source
        ]
    return problems


def _volume_reads(volume: Any, path: str) -> list[str]:
    volume = _mapping(volume)
    kinds = sorted(str(key) for key in volume if key != "name")
    if kinds == ["projected"]:
        sources = _items(_mapping(volume["projected"]).get("sources"))
        return [
            f"{path}.projected.sources[{index}]: {sorted(_mapping(source))}, expected only "
            f"{sorted(_OWN_PROJECTIONS)} ({_EXPECTED})"
            for index, source in enumerate(sources)
            if not set(_mapping(source)) or not set(_mapping(source)) <= _OWN_PROJECTIONS
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
    for part in _CONTAINER_PARTS:
        for index, container in enumerate(_items(pod_spec.get(part))):
            problems += _container_reads(container, f"{where}.{part}[{index}]")
    for index, volume in enumerate(_items(pod_spec.get("volumes"))):
        problems += _volume_reads(volume, f"{where}.volumes[{index}]")
    return problems
