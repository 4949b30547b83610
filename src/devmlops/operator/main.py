"""Run the operator: kopf with our registry and settings, against the cluster in KUBECONFIG or in-cluster."""

from __future__ import annotations

import logging

import kopf
from kubernetes import config as k8s_config
from prometheus_client import start_http_server

from devmlops.adapters.memory import start_trimming
from devmlops.operator.certificates import CertificateKeeper
from devmlops.operator.handlers import build_registry
from devmlops.operator.metrics import metrics
from devmlops.operator.settings import OperatorSettings, kopf_settings

__all__ = ["run"]


def run(settings: OperatorSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: a rollout's analysis would log five Prometheus queries every tick.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    from kubernetes import client as k8s

    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_address, registry=metrics.registry)
    start_trimming()
    registry = build_registry(k8s.ApiClient(), settings)
    if settings.certificates is not None:
        # Every replica keeps the certificates, not only the peering leader: writes are optimistic (see the module).
        CertificateKeeper(k8s.ApiClient(), settings.certificates, metrics=metrics).start()
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
