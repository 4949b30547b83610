"""Wire the webhook process: Kubernetes caches, compiled policies, the verifier chain, then serve over TLS."""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from devmlops.adapters.kubecache import ClusterCaches
from devmlops.adapters.memory import start_trimming
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.opa import OpaEngine
from devmlops.adapters.policystore import PolicyStore
from devmlops.adapters.verifycache import CachingVerifier, DeadlineVerifier
from devmlops.webhook.app import WebhookDeps
from devmlops.webhook.metrics import WebhookMetrics
from devmlops.webhook.server import serve
from devmlops.webhook.service import AdmissionService, TimedVerifier
from devmlops.webhook.settings import WebhookSettings

__all__ = ["run"]


def _api_client() -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


def run(settings: WebhookSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metrics = WebhookMetrics.create()
    start_trimming()
    store = PolicyStore(no_match=settings.no_match)
    caches = ClusterCaches(
        _api_client(), on_policy_change=store.apply, secret_namespaces=settings.evidence_secret_namespaces
    ).start()
    timed = TimedVerifier(OmsVerifier(), metrics)
    verifier = CachingVerifier(
        DeadlineVerifier(timed, seconds=settings.verification_timeout_seconds),
        on_event=lambda event: metrics.cache_events.labels(event).inc(),
    )
    engine = OpaEngine(settings.opa_url, timeout=settings.opa_timeout_seconds) if settings.opa_url else None
    service = AdmissionService(
        policies=store.snapshot,
        lookup=caches,
        verifier=verifier,
        engine=engine,
        model_server_images=settings.model_server_images,
    )

    # Ready only once policies and evidence caches have been listed: before that every answer would be a guess.
    def status() -> dict[str, Any]:
        snapshot = store.snapshot()
        return {
            "policies": len(snapshot.policies),
            "policyNames": sorted(p.name for p in snapshot.policies),
            "brokenPolicies": sorted(snapshot.broken),
            "policyRevision": snapshot.revision,
            "opa": "none" if engine is None else ("up" if engine.healthy() else "down"),
        }

    def ready() -> bool:
        return caches.synced and (engine is None or engine.healthy())

    serve(settings, WebhookDeps(decide=service.decide, metrics=metrics, ready=ready, status=status))
