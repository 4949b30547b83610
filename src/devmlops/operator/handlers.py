"""kopf handlers in an explicit registry: ModelDeployment -> model server child + status conditions."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

import aiohttp
import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.opa import OpaEngine
from devmlops.adapters.verifycache import CachingVerifier
from devmlops.core.plan import VerificationPlan
from devmlops.core.render import LABEL_MODEL_DEPLOYMENT, render_children
from devmlops.errors import DevmlopsError
from devmlops.operator.children import dynamic_client, upsert
from devmlops.operator.conditions import ConditionStatus, set_condition
from devmlops.operator.context import load_context
from devmlops.operator.drift import ApiLookup, reevaluate
from devmlops.operator.guard import ReconcileGuard
from devmlops.operator.kserveevents import KServeWarnings
from devmlops.operator.leadership import leads
from devmlops.operator.metrics import metrics
from devmlops.operator.policies import PolicyWatch
from devmlops.operator.readiness import Readiness, child_readiness
from devmlops.operator.retries import Key, RetryQueue
from devmlops.operator.settings import OperatorSettings

__all__ = ["build_registry"]

GROUP, VERSION, PLURAL = "devmlops.io", "v1alpha1", "modeldeployments"
RETRY_SECONDS = 5.0  # a failed reconcile (say, the API server restarted under a pooled connection) is tried again
API_CONNECTIONS = 24  # kopf's watch streams (one per watched kind) hold a connection each; the rest serve requests
VERIFIER_IMAGE = os.environ.get("DEVMLOPS_VERIFIER_IMAGE", "devmlops:0.1.0")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def post_event(core: k8s.CoreV1Api, body: Mapping[str, Any], *, kind: str, reason: str, message: str) -> None:
    """A core/v1 Event about a ModelDeployment, as kopf writes them (kopf's own posting needs a handler context)."""
    metadata = body["metadata"]
    now = dt.datetime.now(dt.UTC)
    event: Any = {
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": kind,
        "source": {"component": "devmlops-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        core.create_namespaced_event(metadata["namespace"], event)
    except ApiException:
        return  # an Event is a courtesy; the status condition carries the same message


def scale_children_to_zero(dynamic: Any, model: Mapping[str, Any]) -> str:
    """Scale the model server down (always allowed by the webhook); return what was scaled."""
    status_child = (model.get("status") or {}).get("child") or {}
    if not status_child:
        return "no child yet"
    resource = dynamic.resources.get(api_version=status_child["apiVersion"], kind=status_child["kind"])
    patch: dict[str, Any] = (
        {"spec": {"predictor": {"minReplicas": 0}}}
        if status_child["kind"] == "InferenceService"
        else {"spec": {"replicas": 0}}
    )
    # Only the replica field changes (the webhook's scale-down rule); the next reconcile that passes finds the child
    # differing from the rendering and writes it back whole.
    try:
        resource.patch(
            body=patch,
            name=status_child["name"],
            namespace=model["metadata"]["namespace"],
            content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        return f"scaling failed: {exc.status}"
    return f"{status_child['kind']}/{status_child['name']} scaled to zero"


def build_registry(api_client: k8s.ApiClient, settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    background: set[asyncio.Task[None]] = set()
    custom = k8s.CustomObjectsApi(api_client)
    core = k8s.CoreV1Api(api_client)
    dynamic = dynamic_client(api_client)
    lookup = ApiLookup(api_client)
    verifier = CachingVerifier(OmsVerifier())
    engine = OpaEngine(settings.opa_url) if settings.opa_url else None
    # A changed policy re-decides every ModelDeployment within a second (a revoked key takes effect now).
    policy_watch = PolicyWatch(api_client).start()
    retries = RetryQueue(RETRY_SECONDS)
    guard = ReconcileGuard()
    # InferenceServices KServe posted a Warning Event about: looked at again by the background loop (readiness.py).
    reported: set[Key] = set()
    reported_lock = threading.Lock()

    def on_warning(key: Key) -> None:
        with reported_lock:
            reported.add(key)

    warnings = KServeWarnings(api_client, settings.namespaces, on_warning).start()

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

    def reconcile_model(body: Mapping[str, Any], logger: Any) -> dict[str, Any]:
        """Bring the child in line with an admitted ModelDeployment; return the status to write."""
        status = body.get("status") or {}
        generation = int(body["metadata"].get("generation") or 0)
        now = _now()

        def condition(
            conditions: list[dict[str, Any]], type_: str, value: ConditionStatus, reason: str, message: str
        ) -> list[dict[str, Any]]:
            return set_condition(
                conditions, type_=type_, status=value, reason=reason, message=message, generation=generation, now=now
            )

        conditions = condition(
            list(status.get("conditions") or []),
            "Admitted",
            "True",
            "AdmissionWebhook",
            "the devmlops admission webhook admitted this ModelDeployment",
        )
        policies = policy_watch.snapshot()
        context = load_context(api_client, body, lookup, policies)
        decision = reevaluate(body, policies, lookup, verifier=verifier, engine=engine)
        blocking = [r for r in decision.results if r.blocking]
        if blocking and all(r.outcome == "error" for r in blocking):
            # OPA down, a deadline, the API unreachable: not a verdict on the model. Keep the server as it is and
            # try again (kopf's backoff, or the next re-check round) instead of degrading or scaling it to zero.
            raise DevmlopsError(f"could not re-decide, state kept and retried: {decision.message}")
        metrics.reconciles.labels("ModelDeployment", "allowed" if decision.allowed else "violation").inc()
        if not decision.allowed:
            conditions = condition(conditions, "Degraded", "True", "PolicyViolation", decision.message)
            failed_signature = any(r.gate == "signature" and r.blocking for r in decision.results)
            if failed_signature:
                conditions = condition(conditions, "SignatureVerified", "False", "VerificationFailed", decision.message)
            if any(p.on_violation == "scaleToZero" for p in context.policies):
                scaled = scale_children_to_zero(dynamic, body)
                conditions = condition(
                    conditions, "ServingReady", "False", "ScaledToZero", f"policy onViolation: scaleToZero ({scaled})"
                )
            return {"conditions": conditions, "observedGeneration": generation, "phase": "Degraded"}
        conditions = condition(conditions, "Degraded", "False", "PoliciesPass", "every selecting policy passes")
        if context.awaiting_approval:
            digest = body["spec"]["model"]["digest"]
            message = (
                f"risk tier requires a ModelApproval for {digest} by a second person "
                f"({', '.join(context.approval_required_by)}); not served until then"
            )
            conditions = condition(conditions, "AwaitingApproval", "True", "NoValidApproval", message)
            serving = "no child until approved"
            if (body.get("status") or {}).get("child"):  # the approval expired or a new digest awaits one
                serving = f"approval no longer valid: {scale_children_to_zero(dynamic, body)}"
            conditions = condition(conditions, "ServingReady", "False", "AwaitingApproval", serving)
            return {"conditions": conditions, "observedGeneration": generation, "phase": "AwaitingApproval"}
        if context.approval_required_by:
            approved_by = f"approved by {context.approval.approver} ({context.approval.name})"
            conditions = condition(conditions, "AwaitingApproval", "False", "Approved", approved_by)
        plan = VerificationPlan.for_policies(context.bundle, body["spec"]["model"]["digest"], context.policies)
        signed = plan.verify_signature(verifier)  # cached: reevaluate() verified the same bundle
        conditions = condition(
            conditions, "SignatureVerified", "True", "Verified", f"{signed.digest} signed by {signed.signer}"
        )
        children = render_children(
            body, plan_json=plan.to_json(), verifier_image=VERIFIER_IMAGE, policy_revision=context.revision
        )
        readiness: Readiness | None = None
        for item in children:
            written = upsert(dynamic, item)
            if readiness is None and written.stored is not None:  # the first child is the one that reports
                readiness = child_readiness(written.stored, warnings.about(written.stored))
            logger.info("%s %s %s", item["kind"], item["metadata"]["name"], written.action)
            tampered = [d for d in written.drift if "replicas" not in d.lower()]  # a scale back up is no drift
            if tampered:
                metrics.child_drift.labels(item["kind"]).inc()
                message = f"{item['kind']} {item['metadata']['name']} replaced whole: {'; '.join(tampered[:5])}"
                logger.warning("drift repaired: %s", message)
                post_event(core, body, kind="Warning", reason="DriftRepaired", message=message)
        child = children[0]
        readiness = readiness or Readiness("Unknown", "WaitingForChild", f"waiting for the {child['kind']} to report")
        conditions = condition(conditions, "ServingReady", readiness.status, readiness.reason, readiness.message)
        return {
            "conditions": conditions,
            "observedGeneration": generation,
            "phase": "Admitted",
            "verifiedDigest": signed.digest,
            "signer": signed.signer,
            "child": {"apiVersion": child["apiVersion"], "kind": child["kind"], "name": child["metadata"]["name"]},
        }

    def publish(body: kopf.Body, result: dict[str, Any], *, in_handler: bool = True) -> None:
        """Events on phase transitions, and the phase gauge. Outside a kopf handler (the background loop) kopf cannot
        post, so the Event is written through the API. kopf.event, not kopf.info: posting.level drops the latter."""
        before = (body.get("status") or {}).get("phase")
        metrics.record_phase(f"{body.metadata.namespace}/{body.metadata.name}", result["phase"])
        if result["phase"] == before:
            return
        message = next((c["message"] for c in reversed(result["conditions"]) if c["type"] != "ServingReady"), "")
        kind = "Warning" if result["phase"] == "Degraded" else "Normal"
        if in_handler:
            kopf.event(body, type=kind, reason=result["phase"], message=message)
        else:
            post_event(core, body, kind=kind, reason=result["phase"], message=message)

    def park(key: Key, exc: Exception, logger: Any) -> None:
        """A failed reconcile keeps the object's state and is retried by the background loop (see retries.py)."""
        metrics.reconciles.labels("ModelDeployment", "error").inc()
        reason = str(exc) if isinstance(exc, (DevmlopsError, ApiException)) else repr(exc)
        logger.warning("reconcile of %s/%s failed, retried in %.0f s: %s", *key, retries.delay_seconds, reason)
        retries.add(key)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def reconcile(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        key = (str(body.metadata.namespace), str(body.metadata.name))
        generation = int(body.metadata.get("generation") or 0)
        with guard.turn(key, generation) as current:
            if not current:
                return  # the background loop already reconciled a newer spec
            try:
                result = reconcile_model(dict(body), logger)
                # Written inside the turn, not left to kopf's patch after the handler: a child's report (a KServe
                # Warning Event, say) that comes meanwhile is mirrored after this status, never under it.
                custom.patch_namespaced_custom_object_status(GROUP, VERSION, key[0], PLURAL, key[1], {"status": result})
            except Exception as exc:  # never raised to kopf: its retry would sleep in a capped worker slot
                park(key, exc, logger)
                return
            guard.reconciled(key, generation)
        retries.discard(key)
        publish(body, result)

    def reconcile_stored(model: dict[str, Any], logger: Any, *, always_write: bool) -> dict[str, Any] | None:
        """Reconcile a ModelDeployment read outside kopf's handler for it; write its status when the phase changed or
        it was of an older spec (or always). None when skipped: it is being deleted, or a handler reconciled a newer
        spec meanwhile."""
        metadata = model["metadata"]
        key = (str(metadata["namespace"]), str(metadata["name"]))
        generation = int(metadata.get("generation") or 0)
        if metadata.get("deletionTimestamp"):
            return None  # never serve (or re-check) what is going away
        with guard.turn(key, generation) as current:
            if not current:
                return None
            result = reconcile_model(model, logger)
            status = model.get("status") or {}
            stale = result["phase"] != status.get("phase") or status.get("observedGeneration") != generation
            if always_write or stale:
                custom.patch_namespaced_custom_object_status(GROUP, VERSION, key[0], PLURAL, key[1], {"status": result})
            guard.reconciled(key, generation)
        publish(kopf.Body(cast(kopf.RawBody, model)), result, in_handler=False)
        return result

    def retry_due(logger: Any) -> None:
        for key in retries.take_due():
            try:
                model = custom.get_namespaced_custom_object(GROUP, VERSION, key[0], PLURAL, key[1])
                reconcile_stored(cast(dict[str, Any], model), logger, always_write=True)
            except ApiException as exc:
                if exc.status == 404:  # gone: nothing to retry
                    guard.forget(key)
                else:
                    park(key, exc, logger)
            except Exception as exc:
                park(key, exc, logger)

    @kopf.on.startup(registry=registry)
    async def start_rechecks(logger: kopf.Logger, **_: Any) -> None:
        """Trust roots expire and keys are revoked: re-decide everything on a timer, not only on change. One loop
        for all ModelDeployments (a kopf timer per object would cost a task and its memory per object)."""

        async def loop() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.5)  # a burst of policy changes within it costs one round
                recheck = policy_watch.changed.is_set() or time.monotonic() - last >= settings.recheck_seconds
                if not recheck and not retries.any_due() and not reported:
                    continue
                if recheck:
                    policy_watch.changed.clear()
                    last = time.monotonic()
                try:
                    await asyncio.get_running_loop().run_in_executor(None, background_round, logger, recheck)
                except Exception:  # a failed round is retried at the next one
                    logger.exception("re-check failed")

        background.add(asyncio.create_task(loop()))

    def is_leader() -> bool:
        """Standalone, or the highest live priority in the peering object (see leadership.py)."""
        if settings.standalone:
            return True
        try:
            if settings.namespaces:
                peering = custom.get_namespaced_custom_object(
                    "kopf.dev", "v1", settings.namespaces[0], "kopfpeerings", settings.peering_name
                )
            else:
                peering = custom.get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", settings.peering_name
                )
        except ApiException:
            return True  # a round too many is harmless; none at all is not
        return leads(cast(dict[str, Any], peering).get("status") or {}, settings.priority, dt.datetime.now(dt.UTC))

    def background_round(logger: Any, recheck: bool) -> None:
        """Only in the replica that acts. One that no longer leads keeps its retries for when it leads again (a
        replica taking over resumes only the objects it has not seen before), asking again in 5 s."""
        if not is_leader():
            for key in retries.take_due():
                retries.add(key)
            with reported_lock:
                reported.clear()  # the replica that leads follows the same Events
            return
        mirror_reported(logger)
        retry_due(logger)
        if recheck:
            recheck_all(logger)

    def recheck_all(logger: Any) -> None:
        if settings.namespaces:  # only what this operator watches (and has the rights for)
            items = [
                item
                for namespace in settings.namespaces
                for item in cast(
                    dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                )["items"]
            ]
        else:
            items = cast(dict[str, Any], custom.list_cluster_custom_object(GROUP, VERSION, PLURAL))["items"]
        for item in items:
            if not (item.get("status") or {}).get("phase"):
                continue  # not decided yet: its create or resume handler (or a parked retry of it) will decide
            try:
                reconcile_stored(item, logger, always_write=False)
            except (ApiException, DevmlopsError) as exc:
                metrics.reconciles.labels("ModelDeployment", "error").inc()
                logger.warning("re-check of %s failed: %s", item["metadata"]["name"], exc)

    seen_generations: dict[tuple[str, str, str], int] = {}

    def recheck_on_spec_change(body: kopf.Body, namespace: str) -> None:
        """A child's spec changed (its generation moved): reconcile its ModelDeployment soon, which finds any drift
        from the rendering and replaces the child whole (our own writes come back as unchanged)."""
        key = (namespace, str(body.get("kind")), str(body.metadata.name))
        generation = int(body.metadata.get("generation") or 0)
        if seen_generations.get(key) == generation:
            return
        before = seen_generations.get(key)
        seen_generations[key] = generation
        if before is not None:
            retries.add((namespace, str(body.metadata.labels[LABEL_MODEL_DEPLOYMENT])))

    def mirror_ready(owner_name: str, namespace: str, readiness: Readiness) -> None:
        """ServingReady of an Admitted ModelDeployment from its child's report, read afresh in the object's turn."""
        with guard.exclusive((namespace, owner_name)):
            try:
                model = cast(
                    dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, owner_name)
                )
            except ApiException:
                return
            status = model.get("status") or {}
            if status.get("phase") != "Admitted":
                return
            current: dict[str, Any] = next(
                (c for c in status.get("conditions") or [] if c["type"] == "ServingReady"), {}
            )
            if (current.get("status"), current.get("reason"), current.get("message")) == (
                readiness.status,
                readiness.reason,
                readiness.message,
            ):
                return
            conditions = set_condition(
                status.get("conditions") or [],
                type_="ServingReady",
                status=readiness.status,
                reason=readiness.reason,
                message=readiness.message,
                generation=int(model["metadata"].get("generation") or 0),
                now=_now(),
            )
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, owner_name, {"status": {"conditions": conditions}}
            )

    def mirror_reported(logger: Any) -> None:
        """InferenceServices KServe posted a Warning Event about since the last round: look at each again."""
        with reported_lock:
            keys = sorted(reported)
            reported.clear()
        for namespace, name in keys:
            try:
                isvc = cast(
                    dict[str, Any],
                    custom.get_namespaced_custom_object(
                        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name
                    ),
                )
            except ApiException as exc:
                if exc.status != 404:
                    logger.warning("InferenceService %s/%s not read for its report: %s", namespace, name, exc.status)
                continue
            owner = ((isvc.get("metadata") or {}).get("labels") or {}).get(LABEL_MODEL_DEPLOYMENT)
            if owner:
                mirror_ready(str(owner), namespace, child_readiness(isvc, warnings.about(isvc)))

    @kopf.on.event(
        "serving.kserve.io",
        "v1beta1",
        "inferenceservices",
        registry=registry,
        labels={LABEL_MODEL_DEPLOYMENT: kopf.PRESENT},
    )
    def isvc_status(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        recheck_on_spec_change(body, str(namespace))
        readiness = child_readiness(body, warnings.about(body))
        if readiness.status != "Unknown":
            mirror_ready(str(body.metadata.labels[LABEL_MODEL_DEPLOYMENT]), str(namespace), readiness)

    @kopf.on.event("apps", "v1", "deployments", registry=registry, labels={LABEL_MODEL_DEPLOYMENT: kopf.PRESENT})
    def deployment_status(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        recheck_on_spec_change(body, str(namespace))
        readiness = child_readiness(body)
        if readiness.status != "Unknown":
            mirror_ready(str(body.metadata.labels[LABEL_MODEL_DEPLOYMENT]), str(namespace), readiness)

    @kopf.on.resume(GROUP, VERSION, "modelapprovals", registry=registry)
    @kopf.on.create(GROUP, VERSION, "modelapprovals", registry=registry)
    def approved(spec: kopf.Spec, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        """A new approval may release a ModelDeployment that waits for it."""
        name, namespace = str(spec.get("modelDeployment") or ""), str(namespace or "")
        try:
            model = cast(dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
            if (model.get("status") or {}).get("phase") not in (None, "", "AwaitingApproval"):
                return  # already served (or degraded): the approval changes nothing now
            result = reconcile_stored(model, logger, always_write=True)
        except ApiException as exc:
            if exc.status != 404:  # no such ModelDeployment (yet): its own create handler reads the approval
                park((namespace, name), exc, logger)
            return
        except Exception as exc:
            park((namespace, name), exc, logger)
            return
        if result is not None and result["phase"] != "AwaitingApproval":
            logger.info("ModelDeployment %s/%s released by its approval", namespace, name)

    return registry
