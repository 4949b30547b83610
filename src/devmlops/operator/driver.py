"""One reconcile of a ModelDeployment, whoever asks (a kopf handler, a retry, a re-check round, an approval, a
child's report): observe, ``reconcile.plan``, execute, inside the object's turn (guard.py); a failure is parked for
the background loop's retry (retries.py), never raised into kopf."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.errors import DevmlopsError
from devmlops.operator.execute import GROUP, PLURAL, VERSION, EventPoster, Executor
from devmlops.operator.guard import ReconcileGuard
from devmlops.operator.metrics import metrics
from devmlops.operator.observe import Observer
from devmlops.operator.readiness import child_readiness
from devmlops.operator.reconcile import (
    going_away,
    plan,
    readiness_patch,
    service_removals,
    slice_removals,
    status_write_needed,
)
from devmlops.operator.retries import Key, RetryQueue
from devmlops.operator.rollout import rolling_out

__all__ = ["Driver"]


class Driver:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        observer: Observer,
        executor: Executor,
        *,
        guard: ReconcileGuard,
        retries: RetryQueue,
    ) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self.observer = observer
        self.executor = executor
        self.guard = guard
        self.retries = retries

    def park(self, key: Key, exc: Exception, logger: Any) -> None:
        """A failed reconcile keeps the object's state and is retried by the background loop (see retries.py)."""
        metrics.reconciles.labels("ModelDeployment", "error").inc()
        reason = str(exc) if isinstance(exc, (DevmlopsError, ApiException)) else repr(exc)
        logger.warning("reconcile of %s/%s failed, retried in %.0f s: %s", *key, self.retries.delay_seconds, reason)
        self.retries.add(key)

    def reconcile(
        self, model: Mapping[str, Any], logger: Any, *, always_write: bool, post: EventPoster | None = None
    ) -> dict[str, Any] | None:
        """Reconcile ``model`` as read; the status planned (None: skipped, as a newer spec was reconciled already or
        the model is being deleted). Raises on failure (the caller parks it). The status is written inside the
        turn, so a child's report that comes meanwhile is mirrored after it, never under it."""
        metadata = model["metadata"]
        key = (str(metadata["namespace"]), str(metadata["name"]))
        generation = int(metadata.get("generation") or 0)
        if going_away(model):
            return None
        started = self.retries.mark()  # a retry asked for while this reconcile reads is kept (below)
        with self.guard.turn(key, generation) as current:
            if not current:
                return None
            # The model's address first, whatever comes of the rest (its evidence unreadable, a retry).
            slices, service_uids = self.observer.slices(model)
            removals = slice_removals(model, slices, service_uids) if slices is not None else ()
            removed = self.executor.remove_slices(model, removals, post=post)
            # A KServe model's Service names: a Service its InferenceService does not control is not its address.
            services, isvc = self.observer.services(model)
            removed_services = services is not None and self.executor.remove_services(
                model, service_removals(model, services, isvc), post=post
            )
            planned = plan(self.observer.observe(model))
            if planned.status is None and not planned.actions:
                return None
            write = always_write or (planned.status is not None and status_write_needed(model, planned.status))
            status = self.executor.run(planned, model, write_status=write, post=post)
            self.guard.reconciled(key, generation)
        self.retries.discard(key, unless_added_since=started)
        if rolling_out(status):  # its next step and its analysis: looked at again within seconds
            self.retries.add(key)
        # Slices that could not be listed or removed: looked at again soon (a new one makes it look: handlers.py);
        # Services likewise.
        if slices is None or not removed or not removed_services:
            self.retries.add(key)
        return status

    def reconcile_parking(
        self, model: Mapping[str, Any], logger: Any, *, always_write: bool, post: EventPoster | None = None
    ) -> dict[str, Any] | None:
        try:
            return self.reconcile(model, logger, always_write=always_write, post=post)
        except Exception as exc:  # never raised to kopf: its retry would sleep in a capped worker slot
            metadata = model["metadata"]
            self.park((str(metadata["namespace"]), str(metadata["name"])), exc, logger)
            return None

    def read(self, key: Key) -> dict[str, Any]:
        return cast(dict[str, Any], self._custom.get_namespaced_custom_object(GROUP, VERSION, key[0], PLURAL, key[1]))

    def retry(self, key: Key, logger: Any) -> None:
        """A parked reconcile, tried again on the object as it is now."""
        try:
            self.reconcile(self.read(key), logger, always_write=True)
        except ApiException as exc:
            if exc.status == 404:  # gone: nothing to retry
                self.guard.forget(key)
            else:
                self.park(key, exc, logger)
        except Exception as exc:
            self.park(key, exc, logger)

    def mirror(self, owner: Key, child: Mapping[str, Any]) -> None:
        """ServingReady of an Admitted ModelDeployment from its child's report, the model read afresh in its turn."""
        readiness = child_readiness(child, self.observer.warnings.about(child), self.observer.predictor_pods(child))
        with self.guard.exclusive(owner):
            try:
                model = self.read(owner)
            except ApiException:
                return
            patch = readiness_patch(model, readiness, dt.datetime.now(dt.UTC), child)
            if patch is not None:
                self.executor.patch_status(owner[0], owner[1], patch)
