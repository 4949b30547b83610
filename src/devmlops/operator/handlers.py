"""kopf handlers in an explicit registry: thin shells that hand a ModelDeployment, a child's report or an approval to
the driver (observe, plan, execute: driver.py, reconcile.py) and start the background loop (loop.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.ocisig import ImageSignatureChecker, OciClient
from devmlops.adapters.prometheus import PrometheusQuery
from devmlops.adapters.registryauth import RegistryAuth
from devmlops.adapters.registrycache import mlflow_resolver
from devmlops.core.addresses import SERVICE_NAME_LABEL, names_its_service
from devmlops.core.render import LABEL_MODEL_DEPLOYMENT
from devmlops.core.workloads import service_owner_candidates
from devmlops.operator.analysis import CanaryAnalysis
from devmlops.operator.driver import Driver
from devmlops.operator.execute import GROUP, PLURAL, VERSION, Executor, dynamic_client
from devmlops.operator.guard import ReconcileGuard
from devmlops.operator.kserveevents import KServeWarnings
from devmlops.operator.loop import BackgroundLoop
from devmlops.operator.observe import Observer
from devmlops.operator.policies import PolicyWatch
from devmlops.operator.reconcile import PostEvent, released_by_approval
from devmlops.operator.retries import Key, RetryQueue
from devmlops.operator.settings import OperatorSettings
from devmlops.operator.verifier import operator_verifier

__all__ = ["build_registry"]

RETRY_SECONDS = 5.0  # a failed reconcile (say, the API server restarted under a pooled connection) is tried again
ANALYSIS_TIMEOUT_SECONDS = 5.0  # one Prometheus query of a rollout's analysis; past it the step fails (rolled back)
API_CONNECTIONS = 24  # kopf's watch streams (one per watched kind) hold a connection each; the rest serve requests


class _ChildGenerations:
    """A child's spec changed (its generation moved): its ModelDeployment is reconciled soon, which finds any drift
    from the rendering and replaces the child whole (our own writes come back as unchanged)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], int] = {}

    def moved(self, body: Mapping[str, Any], namespace: str) -> bool:
        metadata = body.get("metadata") or {}
        key = (namespace, str(body.get("kind")), str(metadata.get("name")))
        generation = int(metadata.get("generation") or 0)
        before = self._seen.get(key)
        self._seen[key] = generation
        return before is not None and before != generation


def build_registry(api_client: k8s.ApiClient, settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    background: set[asyncio.Task[None]] = set()
    dynamic = dynamic_client(api_client)
    # A changed policy re-decides every ModelDeployment within a second (a revoked key takes effect now).
    policy_watch = PolicyWatch(api_client).start()
    warnings = KServeWarnings(api_client, settings.namespaces, lambda key: loop.child_reported(key))
    verifier = operator_verifier(settings)
    driver = Driver(
        api_client,
        Observer(
            api_client,
            dynamic,
            policy_watch,
            warnings,
            opa_url=settings.opa_url,
            verifier=verifier,
            registry=mlflow_resolver(
                settings.mlflow_tracking_uri,
                timeout_seconds=settings.registry_timeout_seconds,
                ttl_seconds=settings.registry_cache_seconds,
            ),
            images=ImageSignatureChecker(
                OciClient(
                    plain_http=settings.oci_plain_http,
                    timeout=settings.registry_timeout_seconds,
                    auth=RegistryAuth.from_file(settings.registry_auth_file),
                ),
                timeout_seconds=settings.registry_timeout_seconds,
                verifier=verifier,
            ),
            analysis=CanaryAnalysis(
                PrometheusQuery(settings.prometheus_url, ANALYSIS_TIMEOUT_SECONDS) if settings.prometheus_url else None
            ),
            verifier_image=settings.verifier_image,
        ),
        Executor(api_client, dynamic, retrain_url=settings.retrain_webhook_url),
        guard=ReconcileGuard(),
        retries=RetryQueue(RETRY_SECONDS),
    )
    loop = BackgroundLoop(api_client, driver, policy_watch, settings)
    warnings.start()
    generations = _ChildGenerations()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        """An explicit registry has no default login: in-cluster account first, then KUBECONFIG. kopf's own session
        opens a TLS connection per concurrent request without limit (a burst of 1,000 status patches kept some 250
        open, each with asyncio's 256 KiB TLS buffer); ours is capped, and requests past the cap wait their turn."""
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
            **kwargs
        )
        if info is None:
            return None
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=API_CONNECTIONS, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
            proxy=info.proxy_url,
            trust_env=info.trust_env,
        )
        return kopf.AiohttpSession(
            server=info.server,
            default_namespace=info.default_namespace,
            priority=info.priority,
            expiration=info.expiration,
            aiohttp_session=session,
        )

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    # The labels too: a raised risk tier (devmlops.io/eu-ai-act-risk) can demand an approval the model lacks; before,
    # only a child's status event or the periodic re-check noticed it, so a higher tier waited minutes.
    @kopf.on.update(GROUP, VERSION, PLURAL, field="metadata.labels", registry=registry)
    def reconcile(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        def post(_model: Mapping[str, Any], event: PostEvent) -> None:
            # kopf.event, not kopf.info: posting.level drops the latter.
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)

        driver.reconcile_parking(dict(body), logger, always_write=True, post=post)

    @kopf.on.startup(registry=registry)
    async def start_background(logger: kopf.Logger, **_: Any) -> None:
        background.add(asyncio.create_task(loop.run(logger)))

    def child_changed(body: kopf.Body, namespace: str | None) -> None:
        owner: Key = (str(namespace), str(body.metadata.labels[LABEL_MODEL_DEPLOYMENT]))
        if generations.moved(body, str(namespace)):
            driver.retries.add(owner)
        driver.mirror(owner, body)

    @kopf.on.event(
        "serving.kserve.io",
        "v1beta1",
        "inferenceservices",
        registry=registry,
        labels={LABEL_MODEL_DEPLOYMENT: kopf.PRESENT},
    )
    def isvc_status(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        child_changed(body, namespace)

    @kopf.on.event("", "v1", "services", registry=registry, labels={LABEL_MODEL_DEPLOYMENT: kopf.PRESENT})
    def service_gone(body: kopf.Body, namespace: str | None, type: str | None, **_: Any) -> None:
        """A Triton Service deleted (the webhook keeps its name for it): written again within seconds, not at the
        next re-check round."""
        if type == "DELETED":
            driver.retries.add((str(namespace), str(body.metadata.labels[LABEL_MODEL_DEPLOYMENT])))

    @kopf.on.event(
        "discovery.k8s.io", "v1", "endpointslices", registry=registry, labels={SERVICE_NAME_LABEL: kopf.PRESENT}
    )
    def slice_written(body: kopf.Body, namespace: str | None, type: str | None, **_: Any) -> None:
        """An EndpointSlice that does not name its Service as its controller (none the EndpointSlice controller
        writes): the model whose Service name it carries, if any, is looked at within seconds (its reconcile removes
        the slice unless the Service keeps it by uid) in the loop's next tick, not at the next re-check round."""
        if type == "DELETED" or names_its_service(body):
            return
        for model in service_owner_candidates(str(body.metadata.labels[SERVICE_NAME_LABEL])):
            loop.look_soon((str(namespace), model))

    @kopf.on.event("apps", "v1", "deployments", registry=registry, labels={LABEL_MODEL_DEPLOYMENT: kopf.PRESENT})
    def deployment_status(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        child_changed(body, namespace)

    @kopf.on.event(GROUP, VERSION, "modelapprovals", registry=registry)
    def approval_gone(body: kopf.Body, namespace: str | None, type: str | None, **_: Any) -> None:
        """An approval deleted (withdrawn): its ModelDeployment is decided again within seconds, so a served model
        that rested on it waits for another one, scaled to zero (before, only the next re-check round noticed)."""
        if type == "DELETED":
            loop.look_soon((str(namespace), str((body.get("spec") or {}).get("modelDeployment") or "")))

    @kopf.on.resume(GROUP, VERSION, "modelapprovals", registry=registry)
    @kopf.on.create(GROUP, VERSION, "modelapprovals", registry=registry)
    def approved(spec: kopf.Spec, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        """A new approval may release a ModelDeployment that waits for it."""
        key = (str(namespace or ""), str(spec.get("modelDeployment") or ""))
        try:
            model = driver.read(key)
            if not released_by_approval(model):
                return  # already served (or degraded): the approval changes nothing now
            result = driver.reconcile(model, logger, always_write=True)
        except ApiException as exc:
            if exc.status != 404:  # no such ModelDeployment (yet): its own create handler reads the approval
                driver.park(key, exc, logger)
            return
        except Exception as exc:
            driver.park(key, exc, logger)
            return
        if result is not None and result["phase"] != "AwaitingApproval":
            logger.info("ModelDeployment %s/%s released by its approval", *key)

    return registry
