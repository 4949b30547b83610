"""The operator's own background work, outside kopf's workers, in the replica that leads: parked retries, re-check
rounds (on a timer and at once on a policy change), the children KServe posted a Warning Event about, and the models
whose inputs changed where no reconcile watches (an EndpointSlice under a Service name of theirs that does not name
its Service as controller, a withdrawn approval: handlers.py).

Trust roots expire and keys are revoked: everything is decided again on a timer, not only on change. One loop for all
ModelDeployments (a kopf timer per object would cost a task and its memory per object). A replica that no longer
leads keeps its retries for when it leads again (a replica taking over resumes only the objects it has not seen
before), asking again in 5 s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.core.render import LABEL_MODEL_DEPLOYMENT
from devmlops.errors import DevmlopsError
from devmlops.operator.driver import Driver
from devmlops.operator.execute import GROUP, PLURAL, VERSION
from devmlops.operator.leadership import leads
from devmlops.operator.metrics import metrics
from devmlops.operator.policies import PolicyWatch
from devmlops.operator.reconcile import due_for_recheck
from devmlops.operator.retries import Key
from devmlops.operator.settings import OperatorSettings

__all__ = ["BackgroundLoop"]

TICK_SECONDS = 0.5  # a burst of policy changes within it costs one round


class BackgroundLoop:
    def __init__(
        self, api_client: k8s.ApiClient, driver: Driver, policy_watch: PolicyWatch, settings: OperatorSettings
    ) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self._driver = driver
        self._policies = policy_watch
        self._settings = settings
        self._reported: set[Key] = set()
        self._soon: set[Key] = set()
        self._lock = threading.Lock()

    def child_reported(self, key: Key) -> None:
        """KServe posted a Warning Event about InferenceService ``key``: look at it again in the next tick."""
        with self._lock:
            self._reported.add(key)

    def look_soon(self, key: Key) -> None:
        """Something ModelDeployment ``key``'s decision reads changed where no reconcile watches it (an EndpointSlice
        under its Service name that is not its Service's, an approval withdrawn): reconciled in the next tick. Not a
        retry: a reconcile that had read its inputs before the change would discard it when it finished."""
        with self._lock:
            self._soon.add(key)

    async def run(self, logger: Any) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            recheck = self._policies.changed.is_set() or time.monotonic() - last >= self._settings.recheck_seconds
            if not recheck and not self._driver.retries.any_due() and not self._reported and not self._soon:
                continue
            if recheck:
                self._policies.changed.clear()
                last = time.monotonic()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.round, logger, recheck)
            except Exception:  # a failed round is retried at the next one
                logger.exception("re-check failed")

    def round(self, logger: Any, recheck: bool) -> None:
        retries = self._driver.retries
        if not self.is_leader():
            for key in retries.take_due():
                retries.add(key)
            with self._lock:
                self._reported.clear()  # the replica that leads follows the same Events
                self._soon.clear()  # and the same EndpointSlices and approvals
            return
        self.mirror_reported(logger)
        with self._lock:
            soon = sorted(self._soon)
            self._soon.clear()
        for key in soon:
            self._driver.retry(key, logger)
        for key in retries.take_due():
            self._driver.retry(key, logger)
        if recheck:
            self.recheck_all(logger)

    def is_leader(self) -> bool:
        """Standalone, or the highest live priority in the peering object (see leadership.py)."""
        settings = self._settings
        if settings.standalone:
            return True
        try:
            if settings.namespaces:
                peering = self._custom.get_namespaced_custom_object(
                    "kopf.dev", "v1", settings.namespaces[0], "kopfpeerings", settings.peering_name
                )
            else:
                peering = self._custom.get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", settings.peering_name
                )
        except ApiException:
            return True  # a round too many is harmless; none at all is not
        return leads(cast(dict[str, Any], peering).get("status") or {}, settings.priority, dt.datetime.now(dt.UTC))

    def recheck_all(self, logger: Any) -> None:
        custom = self._custom
        if self._settings.namespaces:  # only what this operator watches (and has the rights for)
            items = [
                item
                for namespace in self._settings.namespaces
                for item in cast(
                    dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                )["items"]
            ]
        else:
            items = cast(dict[str, Any], custom.list_cluster_custom_object(GROUP, VERSION, PLURAL))["items"]
        for item in items:
            if not due_for_recheck(item):
                continue
            try:
                self._driver.reconcile(item, logger, always_write=False)
            except (ApiException, DevmlopsError) as exc:
                metrics.reconciles.labels("ModelDeployment", "error").inc()
                logger.warning("re-check of %s failed: %s", item["metadata"]["name"], exc)

    def mirror_reported(self, logger: Any) -> None:
        with self._lock:
            keys = sorted(self._reported)
            self._reported.clear()
        for namespace, name in keys:
            try:
                isvc = cast(
                    dict[str, Any],
                    self._custom.get_namespaced_custom_object(
                        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name
                    ),
                )
            except ApiException as exc:
                if exc.status != 404:
                    logger.warning("InferenceService %s/%s not read for its report: %s", namespace, name, exc.status)
                continue
            owner = ((isvc.get("metadata") or {}).get("labels") or {}).get(LABEL_MODEL_DEPLOYMENT)
            if owner:
                self._driver.mirror((namespace, str(owner)), isvc)
