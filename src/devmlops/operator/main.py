"""Run the operator: kopf with our registry and settings, against the cluster in KUBECONFIG or in-cluster."""

from __future__ import annotations

import logging

import kopf
from kubernetes import config as k8s_config

from devmlops.operator.handlers import build_registry
from devmlops.operator.settings import OperatorSettings, kopf_settings

__all__ = ["run"]


def run(settings: OperatorSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    from kubernetes import client as k8s

    registry = build_registry(k8s.ApiClient())
    kopf.run(
        registry=registry,
        settings=kopf_settings(),
        standalone=settings.standalone,
        priority=settings.priority,
        # kopf makes peering mandatory whenever a peering name is given, so name it only when peering.
        peering_name=None if settings.standalone else settings.peering_name,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=settings.liveness_endpoint,
    )
