"""Reading a pod spec field by field as a review carries it: a field of the wrong type reads as empty, so that the
checks built on it (core/podbaseline.py, core/namespacereads.py) name what they find by field path instead of
failing on it. The API server has validated the types before any webhook sees the object."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["CONTAINER_PARTS", "containers", "items", "mapping"]

CONTAINER_PARTS = ("initContainers", "containers", "ephemeralContainers")


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def containers(pod_spec: Mapping[str, Any], where: str) -> Iterator[tuple[Any, str]]:
    """Every container of every kind in ``pod_spec`` (at field path ``where``), with its own field path."""
    for part in CONTAINER_PARTS:
        for index, container in enumerate(items(pod_spec.get(part))):
            yield container, f"{where}.{part}[{index}]"
