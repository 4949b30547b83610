"""Wire the webhook process: Kubernetes caches, compiled policies, the verifier chain, then serve over TLS."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from devmlops.adapters.kubecache import ClusterCaches
from devmlops.adapters.memory import start_trimming
from devmlops.adapters.ocisig import ImageSignatureChecker, OciClient
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.opa import OpaEngine
from devmlops.adapters.policystore import PolicyStore
from devmlops.adapters.registryauth import RegistryAuth
from devmlops.adapters.registrycache import mlflow_resolver
from devmlops.adapters.verifycache import CachingVerifier, DeadlineVerifier
from devmlops.core.ports import SignatureVerifier
from devmlops.webhook.app import WebhookDeps
from devmlops.webhook.inline import (
    InlineGuardEngine,
    InlineGuardRegistry,
    InlineGuardVerifier,
    WouldBlock,
    inline_only,
)
from devmlops.webhook.metrics import WebhookMetrics
from devmlops.webhook.server import serve_workers
from devmlops.webhook.service import AdmissionService, TimedVerifier
from devmlops.webhook.settings import WebhookSettings

__all__ = ["guarded_verifier", "lean_log_records", "run", "wire"]


class _GuardedApiClient(k8s.ApiClient):
    """An API call from a decision on the event loop (a chain owner the watch has not delivered yet) would hold the
    loop: it raises WouldBlock, and the review is decided in the pool instead (webhook/inline.py)."""

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if inline_only():
            raise WouldBlock("Kubernetes API call")
        return super().call_api(*args, **kwargs)


def _api_client() -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return _GuardedApiClient()


def lean_log_records() -> None:
    """The log format is the message alone (one JSON audit line per review): skip what a LogRecord would otherwise
    look up for every line (caller frame, thread, process), as the logging HOWTO's "Optimization" section shows."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _not_inline() -> None:
    """An image signature lookup is a network round trip: never on the event loop (webhook/inline.py)."""
    if inline_only():
        raise WouldBlock("image signature lookup")


def guarded_verifier(timed: SignatureVerifier, *, seconds: float) -> InlineGuardVerifier:
    """What the verification cache sits on: a small key or certificate-chain bundle is verified on the event loop
    while deciding inline, anything else in the verification pool under the deadline (webhook/inline.py)."""
    return InlineGuardVerifier(DeadlineVerifier(timed, seconds=seconds), direct=timed)


def run(settings: WebhookSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve_workers(settings, functools.partial(wire, settings))


def wire(settings: WebhookSettings) -> WebhookDeps:
    """One worker's dependencies: its own watch caches, compiled policies and verification cache."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # a spawned worker starts without it
    lean_log_records()
    metrics = WebhookMetrics.create()
    start_trimming()
    store = PolicyStore(no_match=settings.no_match)
    caches = ClusterCaches(
        _api_client(),
        on_policy_change=store.apply,
        secret_namespaces=settings.evidence_secret_namespaces,
        config_map_namespaces=settings.evidence_configmap_namespaces,
    ).start()
    timed = TimedVerifier(OmsVerifier(), metrics)

    def cache_event(event: str) -> None:
        metrics.cache_events.labels(event).inc()

    verifier = CachingVerifier(
        guarded_verifier(timed, seconds=settings.verification_timeout_seconds), on_event=cache_event
    )

    def registry_event(event: str) -> None:
        if event != "miss" or not inline_only():  # an inline miss is looked up in the pool: counted there
            metrics.registry_lookups.labels(event).inc()

    engine = OpaEngine(settings.opa_url, timeout=settings.opa_timeout_seconds) if settings.opa_url else None
    service = AdmissionService(
        policies=store.snapshot,
        lookup=caches,
        verifier=verifier,
        engine=InlineGuardEngine(engine) if engine is not None else None,
        model_server_images=settings.model_server_images,
        identities=settings.identities,
        verifier_image=settings.verifier_image,
        registry=mlflow_resolver(
            settings.mlflow_tracking_uri,
            timeout_seconds=settings.registry_timeout_seconds,
            ttl_seconds=settings.registry_cache_seconds,
            guard=InlineGuardRegistry,
            on_event=registry_event,
        ),
        images=ImageSignatureChecker(
            OciClient(
                plain_http=settings.oci_plain_http,
                timeout=settings.registry_timeout_seconds,
                auth=RegistryAuth.from_file(settings.registry_auth_file),
            ),
            timeout_seconds=settings.registry_timeout_seconds,
            guard=_not_inline,
            verifier=verifier,  # certificate and keyless image signatures: cached, deadline, inline guard
        ),
    )

    # Ready only once policies and evidence caches have been listed: before that every answer would be a guess.
    def status() -> dict[str, Any]:
        snapshot = store.snapshot()
        return {
            "pid": os.getpid(),  # which worker answered (there may be several on the port)
            "policies": len(snapshot.policies),
            "policyNames": sorted(p.name for p in snapshot.policies),
            "brokenPolicies": sorted(snapshot.broken),
            "policyRevision": snapshot.revision,
            "opa": "none" if engine is None else ("up" if engine.healthy() else "down"),
        }

    def ready() -> bool:
        return caches.synced and (engine is None or engine.healthy())

    return WebhookDeps(
        decide=service.decide,
        stamp=service.stamp,
        metrics=metrics,
        ready=ready,
        status=status,
        inline_decisions=True,  # every wait above is guarded: the verifier, OPA, the registry and the API client
    )
