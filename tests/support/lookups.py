"""A ClusterLookup for tests and benchmarks whose requests carry every document inline: the cluster is empty."""

from __future__ import annotations

from typing import Any


class EmptyCluster:
    def config_map(self, namespace: str, name: str) -> None:
        return None

    def secret(self, namespace: str, name: str) -> None:
        return None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return {}

    def model_deployment(self, namespace: str, name: str) -> None:
        return None

    def service(self, namespace: str, name: str) -> None:
        return None

    def ip_address(self, ip: str) -> None:
        return None

    def pod(self, namespace: str, name: str) -> None:
        return None

    def endpoint_slices(self, namespace: str, service: str) -> list[dict[str, Any]]:
        return []

    def approvals(self) -> list[dict[str, Any]]:
        return []

    def inference_service(self, namespace: str, name: str) -> None:
        return None
