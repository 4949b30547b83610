"""Watch-backed caches of Kubernetes objects: list once, then follow the watch; re-list when it expires.

The webhook reads ConfigMaps and Secrets (labelled ``devmlops.io/evidence=true``), namespace labels and
ClusterModelPolicies from here, so an admission request costs no API call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.evidence import decode_values
from devmlops.core.addresses import SERVICE_NAME_LABEL
from devmlops.core.exemptions import BreakGlass, Exemption, compile_break_glass, compile_exemption
from devmlops.errors import EvidenceUnavailableError, InvalidInputError

__all__ = ["ClusterCaches", "WatchCache", "policy_caches", "trimmed"]

_log = logging.getLogger("devmlops.cache")
Key = tuple[str, str]


def _key(obj: Mapping[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


_BOOKKEEPING = ("kopf.zalando.org/", "kubectl.kubernetes.io/last-applied-configuration")


def trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what no decision reads: managedFields, kopf's and kubectl's copies of earlier specs.
    They are most of an object's size, and a cache holds thousands of objects."""
    metadata = dict(obj.get("metadata") or {})
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        metadata["annotations"] = {k: v for k, v in annotations.items() if not k.startswith(_BOOKKEEPING)}
    return {**obj, "metadata": metadata}


# What runs Pods in a namespace: whoever may create one, or change one's Pod template (or a Pod's image), may run
# their code under any ServiceAccount of that namespace.
_RUNS_PODS = (
    ("", "pods"),
    ("", "replicationcontrollers"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
)
# The ways to act as a ServiceAccount of a namespace (group, resource, subresource, verb, for that account by name):
# impersonate it, mint its token, run a Pod or a workload as it, get into a Pod that runs as it (its token is mounted
# there), or create or read a token Secret for it. The first six alone let an approver who may create CronJobs (only
# that) where the requesting bot lives approve what her CronJob requested as the bot (second attack round).
_ACTING_AS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("", "serviceaccounts", "", "impersonate", True),
    ("", "serviceaccounts", "token", "create", True),
    *((group, resource, "", verb, False) for group, resource in _RUNS_PODS for verb in ("create", "update", "patch")),
    ("", "pods", "exec", "create", False),
    ("", "pods", "attach", "create", False),
    ("", "pods", "ephemeralcontainers", "patch", False),
    ("", "pods", "ephemeralcontainers", "update", False),
    ("", "secrets", "", "create", False),
    ("", "secrets", "", "get", False),
    ("", "secrets", "", "list", False),
)


class WatchCache:
    """One resource kind, kept as plain dicts (``transform``ed) by (namespace, name)."""

    def __init__(
        self,
        name: str,
        list_call: Callable[..., Any],
        serialize: Callable[[Any], Any],
        *,
        label_selector: str = "",
        transform: Callable[[dict[str, Any]], Any] = lambda obj: trimmed(obj),
        on_change: Callable[[str, dict[str, Any]], None] = lambda _event, _obj: None,
        watch_timeout: int = 300,
        optional: bool = False,
    ) -> None:
        self.name = name
        self._list = list_call
        self._serialize: Callable[[Any], Any] = serialize
        self._selector = label_selector
        self._transform = transform
        self._on_change = on_change
        self._timeout = watch_timeout
        self._optional = optional
        self._items: dict[Key, Any] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> WatchCache:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def get(self, namespace: str, name: str) -> Any:
        with self._lock:
            return self._items.get((namespace, name))

    def values(self) -> list[Any]:
        with self._lock:
            return list(self._items.values())

    def _relist(self) -> str:
        kwargs = {"label_selector": self._selector} if self._selector else {}
        listing = self._serialize(self._list(**kwargs))
        items = {_key(obj): obj for obj in listing.get("items", [])}
        with self._lock:
            gone = set(self._items) - set(items)
            self._items = {key: self._transform(obj) for key, obj in items.items()}
        for key in gone:
            self._on_change("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        for obj in items.values():
            self._on_change("ADDED", obj)
        self._synced.set()
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    def _run(self) -> None:
        backoff = 0.5
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._relist()
                version = self._follow(version)
                backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:  # the watch expired: list again
                    version = ""
                    continue
                if exc.status == 404 and self._optional:  # the kind is not installed (no KServe): nothing to hold
                    self._synced.set()
                    self._stop.wait(30)
                    continue
                _log.warning("%s watch failed (%s); retrying in %.1fs", self.name, exc.status, backoff)
            except Exception as exc:  # network errors of many kinds: keep the last state, retry
                _log.warning("%s watch failed (%s); retrying in %.1fs", self.name, exc, backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _follow(self, version: str) -> str:
        kwargs: dict[str, Any] = {
            "resource_version": version,
            "timeout_seconds": self._timeout,
            "allow_watch_bookmarks": True,
        }
        if self._selector:
            kwargs["label_selector"] = self._selector
        stream = watch.Watch()
        for event in stream.stream(self._list, **kwargs):
            if self._stop.is_set():
                stream.stop()
                break
            obj = self._serialize(event["object"])
            kind = event["type"]
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            with self._lock:
                if kind == "DELETED":
                    self._items.pop(_key(obj), None)
                else:
                    self._items[_key(obj)] = self._transform(obj)
            self._on_change(kind, obj)
        return version


def _devmlops_lister(custom: k8s.CustomObjectsApi, plural: str) -> Callable[..., Any]:
    """The list call of one devmlops.io kind, cluster-wide (the watch helper turns it into a watch)."""

    def call(**kwargs: Any) -> Any:
        if plural in ("clustermodelpolicies", "clusterworkloadexemptions", "clusterbreakglasses"):
            return custom.list_cluster_custom_object("devmlops.io", "v1alpha1", plural, **kwargs)
        return custom.list_custom_object_for_all_namespaces("devmlops.io", "v1alpha1", plural, **kwargs)

    call.__name__ = f"list_{plural}"  # the watch helper names the call in its errors
    return call


def policy_caches(
    api_client: k8s.ApiClient, on_change: Callable[[str, dict[str, Any]], None]
) -> tuple[WatchCache, WatchCache]:
    """ClusterModelPolicies and ModelPolicies, each change passed on with its ``kind`` (for ``PolicyStore.apply``)."""
    custom = k8s.CustomObjectsApi(api_client)

    def cache(plural: str, kind: str) -> WatchCache:
        def changed(event: str, obj: dict[str, Any]) -> None:
            on_change(event, {**obj, "kind": kind})

        return WatchCache(
            plural, _devmlops_lister(custom, plural), api_client.sanitize_for_serialization, on_change=changed
        )

    return cache("clustermodelpolicies", "ClusterModelPolicy"), cache("modelpolicies", "ModelPolicy")


def _namespaced_lister(core: k8s.CoreV1Api, kind: str, namespace: str) -> Callable[..., Any]:
    """The list call of Secrets or ConfigMaps ("secret", "config_map") in one namespace, or in all ("")."""
    if not namespace:
        return cast(Callable[..., Any], getattr(core, f"list_{kind}_for_all_namespaces"))
    namespaced = getattr(core, f"list_namespaced_{kind}")

    def call(**kwargs: Any) -> Any:
        return namespaced(namespace, **kwargs)

    call.__name__ = f"list_namespaced_{kind}"  # the watch helper names the call in its errors
    return call


def _decoded_secret(obj: dict[str, Any]) -> dict[str, str]:
    data = decode_values(obj.get("data"))
    return {**data, **(obj.get("stringData") or {})}


def _config_map(obj: dict[str, Any]) -> dict[str, str]:
    binary = decode_values(obj.get("binaryData"))
    return {**binary, **(obj.get("data") or {})}


def _scoped(
    caches: Mapping[str, WatchCache], allowed: tuple[str, ...] | None, namespace: str, what: str, fix: str
) -> WatchCache:
    """The evidence cache that holds ``namespace``, or a refusal saying where this installation reads evidence."""
    if allowed is not None and namespace not in allowed:
        where = f"only in: {', '.join(allowed)}" if allowed else "in no namespace"
        raise EvidenceUnavailableError(f"this installation reads evidence {what} {where}; {fix}")
    return caches["" if allowed is None else namespace]


def _workload(obj: dict[str, Any]) -> dict[str, Any]:
    """What a chain decision reads of a ReplicaSet or Deployment: metadata and spec (status changes every second)."""
    return {"metadata": trimmed(obj)["metadata"], "spec": obj.get("spec") or {}}


def _compiled(compile_: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """Cache the compiled form; a broken object (the CRD schema let it through) is logged and grants nothing."""

    def transform(obj: dict[str, Any]) -> Any:
        try:
            return compile_(obj)
        except InvalidInputError as exc:
            _log.warning("ignoring %s: %s", (obj.get("metadata") or {}).get("name"), exc.user_message)
            return None

    return transform


class ClusterCaches:
    """The caches the webhook needs, and the ``DocumentLookup`` over them."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        evidence_selector: str = "devmlops.io/evidence=true",
        on_policy_change: Callable[[str, dict[str, Any]], None] = lambda _e, _o: None,
        secret_namespaces: tuple[str, ...] | None = None,
        config_map_namespaces: tuple[str, ...] | None = None,
    ) -> None:
        """``secret_namespaces``: None watches labelled Secrets in every namespace (cluster-wide access); a tuple
        watches only those namespaces (a Role in each is enough), and an empty one reads no Secret at all.
        ``config_map_namespaces`` the same for evidence ConfigMaps (RBAC cannot limit reads to labelled objects;
        namespaces it can)."""
        core = k8s.CoreV1Api(api_client)
        custom = k8s.CustomObjectsApi(api_client)
        serialize = api_client.sanitize_for_serialization
        self._core = core
        self._networking = k8s.NetworkingV1Api(api_client)
        self._discovery = k8s.DiscoveryV1Api(api_client)
        self._authorization = k8s.AuthorizationV1Api(api_client)
        self._evidence_selector = evidence_selector

        def evidence_caches(
            kind: str, namespaces: tuple[str, ...] | None, transform: Callable[[dict[str, Any]], Any]
        ) -> dict[str, WatchCache]:
            """One cache per allowed namespace ("" for every namespace)."""
            return {
                namespace: WatchCache(
                    f"{kind.replace('_', '')}s-{namespace or 'all'}",
                    _namespaced_lister(core, kind, namespace),
                    serialize,
                    label_selector=evidence_selector,
                    transform=transform,
                )
                for namespace in (("",) if namespaces is None else namespaces)
            }

        self._config_map_namespaces = config_map_namespaces
        self.config_map_caches = evidence_caches("config_map", config_map_namespaces, _config_map)
        self._secret_namespaces = secret_namespaces
        self.secret_caches = evidence_caches("secret", secret_namespaces, _decoded_secret)
        self.namespaces = WatchCache(
            "namespaces",
            core.list_namespace,
            serialize,
            transform=lambda obj: dict((obj.get("metadata") or {}).get("labels") or {}),
        )
        self.policies, self.team_policies = policy_caches(api_client, on_policy_change)
        self.model_deployments = WatchCache("modeldeployments", _devmlops_lister(custom, "modeldeployments"), serialize)
        self._custom = custom
        self.approvals_watch = WatchCache("modelapprovals", _devmlops_lister(custom, "modelapprovals"), serialize)

        def list_inference_services(**kwargs: Any) -> Any:
            return custom.list_custom_object_for_all_namespaces(
                "serving.kserve.io", "v1beta1", "inferenceservices", **kwargs
            )

        self.inference_services = WatchCache("inferenceservices", list_inference_services, serialize, optional=True)
        apps = k8s.AppsV1Api(api_client)
        self._apps = apps
        self._serialize: Callable[[Any], Any] = serialize
        # Owners a model server's chain passes through (watch-backed: a Pod's review makes no API call).
        self.replica_sets = WatchCache(
            "replicasets", apps.list_replica_set_for_all_namespaces, serialize, transform=_workload
        )
        self.stateful_sets = WatchCache(
            "statefulsets", apps.list_stateful_set_for_all_namespaces, serialize, transform=_workload
        )
        self.deployments = WatchCache(
            "deployments", apps.list_deployment_for_all_namespaces, serialize, transform=_workload
        )
        self.exemptions_watch = WatchCache(
            "clusterworkloadexemptions",
            _devmlops_lister(custom, "clusterworkloadexemptions"),
            serialize,
            transform=_compiled(compile_exemption),
        )
        self.break_glass_watch = WatchCache(
            "clusterbreakglasses",
            _devmlops_lister(custom, "clusterbreakglasses"),
            serialize,
            transform=_compiled(compile_break_glass),
        )
        self._all = (
            *self.config_map_caches.values(),
            *self.secret_caches.values(),
            self.namespaces,
            self.policies,
            self.team_policies,
            self.model_deployments,
            self.approvals_watch,
            self.inference_services,
            self.replica_sets,
            self.stateful_sets,
            self.deployments,
            self.exemptions_watch,
            self.break_glass_watch,
        )

    def start(self) -> ClusterCaches:
        for cache in self._all:
            cache.start()
        return self

    def stop(self) -> None:
        for cache in self._all:
            cache.stop()

    @property
    def synced(self) -> bool:
        return all(cache.synced for cache in self._all)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(cache.wait_synced(max(0.0, deadline - time.monotonic())) for cache in self._all)

    # DocumentLookup
    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """From the watch cache; one created a moment ago (before the watch delivered it) is read once, and counts
        only when it carries the evidence label, as in the cache."""
        cache = _scoped(
            self.config_map_caches,
            self._config_map_namespaces,
            namespace,
            "ConfigMaps",
            f"ask the platform team to add namespace {namespace} (evidence.configMapNamespaces), or put it inline",
        )
        found: Mapping[str, str] | None = cache.get(namespace, name)
        if found is not None or not cache.synced:
            return found
        return self._read_labelled("config_map", namespace, name, _config_map)  # created a moment ago?

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        cache = _scoped(
            self.secret_caches,
            self._secret_namespaces,
            namespace,
            "Secrets",
            "put the document in a ConfigMap labelled devmlops.io/evidence=true, or ask the platform team to add the "
            "namespace (evidence.secretNamespaces)",
        )
        found: Mapping[str, str] | None = cache.get(namespace, name)
        if found is not None or not cache.synced:
            return found
        return self._read_labelled("secret", namespace, name, _decoded_secret)  # created a moment ago?

    def _read_labelled(
        self, kind: str, namespace: str, name: str, transform: Callable[[dict[str, Any]], dict[str, str]]
    ) -> Mapping[str, str] | None:
        """One read of an evidence object the watch has not delivered yet; it counts only with the evidence label."""
        try:
            read = getattr(self._core, f"read_namespaced_{kind}")
            stored = self._serialize(read(name, namespace, _request_timeout=2))
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise EvidenceUnavailableError(f"{kind} {namespace}/{name} could not be read ({exc.status})") from exc
        key, _, value = self._evidence_selector.partition("=")
        labels = (stored.get("metadata") or {}).get("labels") or {}
        return transform(stored) if labels.get(key) == value else None

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """From the watch cache; a namespace created a moment ago (the cache not there yet: every namespace has at
        least its kubernetes.io/metadata.name label) is read from the API server once. Unreadable: no labels (no
        policy selects it: denied, naming that)."""
        found: Mapping[str, str] | None = self.namespaces.get("", namespace)
        if found is not None or not namespace:
            return found or {}
        try:
            return self.namespace_labels_now(namespace)
        except EvidenceUnavailableError:
            return {}

    def namespace_labels_now(self, namespace: str) -> Mapping[str, str]:
        """The labels as the API server has them now (one read): for a decision that the cache, a moment behind a
        label a cluster admin just set, would make more lenient."""
        try:
            stored: Any = self._core.read_namespace(namespace, _request_timeout=2)
        except ApiException as exc:
            raise EvidenceUnavailableError(f"namespace {namespace} could not be read ({exc.status})") from exc
        return dict(stored.metadata.labels or {})

    def model_deployment(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """From the watch cache; one created a moment ago (an approval written right after it, or its first child)
        is read from the API server once."""
        found: Mapping[str, Any] | None = self.model_deployments.get(namespace, name)
        if found is not None:
            return found
        return _read_one(
            f"ModelDeployment {namespace}/{name}",
            lambda: self._custom.get_namespaced_custom_object(
                "devmlops.io", "v1alpha1", namespace, "modeldeployments", name, _request_timeout=2
            ),
            dict,
        )

    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """One read of a Service (a new ModelDeployment's names are checked once; nothing watches Services)."""
        return _read_one(
            f"Service {namespace}/{name}",
            lambda: self._core.read_namespaced_service(name, namespace, _request_timeout=2),
            self._serialize,
        )

    def pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """One read of the Pod an exec, attach or port-forward outside enforcement opens (nothing watches Pods)."""
        return _read_one(
            f"Pod {namespace}/{name}",
            lambda: self._core.read_namespaced_pod(name, namespace, _request_timeout=2),
            self._serialize,
        )

    def may_act_as(self, user: str, groups: Sequence[str], namespace: str, account: str) -> str:
        """How ``user`` (in ``groups``) may act as the ServiceAccount ``account`` of ``namespace``, as the API
        server's authorizer answers now: the first of ``_ACTING_AS`` it allows ('' for none). One SubjectAccessReview
        each, only for a new approval of a model a ServiceAccount requested. Unanswered: EvidenceUnavailableError
        (refused)."""
        for group, resource, subresource, verb, named in _ACTING_AS:
            attributes = k8s.V1ResourceAttributes(
                namespace=namespace,
                group=group,
                resource=resource,
                subresource=subresource or None,
                verb=verb,
                name=account if named else None,
            )
            spec = k8s.V1SubjectAccessReviewSpec(user=user, groups=list(groups), resource_attributes=attributes)
            try:
                answer: Any = self._authorization.create_subject_access_review(
                    k8s.V1SubjectAccessReview(spec=spec), _request_timeout=2
                )
            except ApiException as exc:
                raise EvidenceUnavailableError(
                    f"whether {user} may act as ServiceAccount {namespace}/{account} could not be asked ({exc.status})"
                ) from exc
            if answer.status is not None and answer.status.allowed:
                what = f"{resource}/{subresource}" if subresource else resource
                return f"may {verb} {what}{' ' + account if named else ''} in namespace {namespace}"
        return ""

    def ip_address(self, ip: str) -> Mapping[str, Any] | None:
        """One read of the IPAddress object the API server keeps for an allocated ClusterIP (named by the address;
        its parentRef names the Service): only to say whose address a refused externalIP is."""
        return _read_one(
            f"IPAddress {ip}", lambda: self._networking.read_ip_address(ip, _request_timeout=2), self._serialize
        )

    def endpoint_slices(self, namespace: str, service: str) -> list[Mapping[str, Any]]:
        """One list of the EndpointSlices labelled as joining Service ``service`` (a new ModelDeployment's Service
        names are checked once each; nothing watches slices). Unreadable: EvidenceUnavailableError (refused)."""
        try:
            stored: Any = self._discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}", _request_timeout=2
            )
        except ApiException as exc:
            raise EvidenceUnavailableError(
                f"the EndpointSlices of Service {namespace}/{service} could not be listed ({exc.status})"
            ) from exc
        return [self._serialize(item) for item in stored.items or []]

    def inference_service(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        found: Mapping[str, Any] | None = self.inference_services.get(namespace, name)
        return found

    def approvals(self) -> list[Mapping[str, Any]]:
        values: list[Mapping[str, Any]] = self.approvals_watch.values()
        return values

    def workload(self, resource: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        """A chain owner from its cache; a ReplicaSet or Deployment created a moment ago (its controller makes Pods
        at once, before the watch delivers it) is read from the API server once."""
        if resource == "inferenceservices":
            return self.inference_service(namespace, name)
        caches = {"replicasets": self.replica_sets, "deployments": self.deployments, "statefulsets": self.stateful_sets}
        cache = caches.get(resource)
        if cache is None:
            return None
        found: Mapping[str, Any] | None = cache.get(namespace, name)
        if found is not None or resource == "statefulsets":
            return found
        try:
            if resource == "replicasets":
                stored: Any = self._apps.read_namespaced_replica_set(name, namespace, _request_timeout=2)
            else:
                stored = self._apps.read_namespaced_deployment(name, namespace, _request_timeout=2)
            return _workload(self._serialize(stored))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise EvidenceUnavailableError(f"{resource} {namespace}/{name} could not be read ({exc.status})") from exc

    def exemptions(self) -> tuple[Exemption, ...]:
        return tuple(e for e in self.exemptions_watch.values() if e is not None)

    def break_glass(self) -> tuple[BreakGlass, ...]:
        return tuple(b for b in self.break_glass_watch.values() if b is not None)


def _read_one(what: str, read: Callable[[], Any], convert: Callable[[Any], Any]) -> Mapping[str, Any] | None:
    """One read from the API server: the object as a mapping, None when it does not exist, and any other answer an
    EvidenceUnavailableError naming ``what`` (the review is refused)."""
    try:
        stored = read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise EvidenceUnavailableError(f"{what} could not be read ({exc.status})") from exc
    found: Mapping[str, Any] = convert(stored)
    return found
