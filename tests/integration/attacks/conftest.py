"""The attacker of docs/threat-model.md and the stage they attack on.

Every test here runs through the registered webhook (the ``stack`` session fixture) in a fresh namespace that a
cluster admin put under enforcement (label ``devmlops.io/enforce: "true"``), where ``mallory`` holds the rights of a
namespace editor: Kubernetes's own ``edit`` ClusterRole, bound there as ``kubectl create rolebinding
--clusterrole=edit`` binds it, plus the Role "namespace-editor" for what ``edit`` lacks (ephemeral containers,
Endpoints and EndpointSlices, the devmlops and KServe kinds, reading everything). The other users the tests make
editors (bob, alice, bots, ServiceAccounts) hold the Role alone: no ServiceAccounts, tokens or impersonation unless a
test grants them. The helpers at the top are plain functions so that
test modules import them (``from tests.integration.attacks.conftest import denied, ...``); the fixtures below build
on them.

Helpers that make attacks fail closed-loop: a helper that waits for something the webhook must see (an exemption,
a break-glass, a revoked key) waits for its *effect* through the API server, bounded in time, so a denial is never
asserted before the webhook could have known better.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.blobsign import sign_blob_with_key
from devmlops.adapters.kube import api_client, denial_message
from devmlops.adapters.oms import OmsVerifier
from devmlops.core.policy import Authority
from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cyclonedx_sbom,
    eventually,
    signed_by_evidence,
    signed_model,
    trusting,
)
from tests.support.models import make_key, make_model, sign_with_key

ATTACKER = "mallory"
ENFORCE_LABEL = "devmlops.io/enforce"
EDITOR_ROLE = "namespace-editor"
BUILT_IN_EDIT = "edit"  # Kubernetes's own ClusterRole (aggregated from system:aggregate-to-edit), bound to mallory
RBAC_API = "rbac.authorization.k8s.io"
KSERVE_GROUP = "serving.kserve.io"

# Images. Pinned references are what an exemption or an allow-list can name; the registry is never contacted.
TRITON = "nvcr.io/nvidia/tritonserver@sha256:" + "2" * 64
SKLEARN_SERVER = "docker.io/kserve/sklearnserver@sha256:" + "3" * 64
TOOLBOX = "registry.example.com/platform/toolbox@sha256:" + "4" * 64  # what the exemptions below allow
LOG_SHIPPER = "registry.example.com/platform/log-shipper@sha256:" + "5" * 64  # a second exempt image
BENIGN = "registry.example.com/platform/log-shipper:1.4"  # a harmless-looking name, not pinned, not exempt
ROGUE = "registry.example.com/mallory/server@sha256:" + "6" * 64  # pinned, allow-listed nowhere
VERIFIER = "devmlops:0.1.0"  # the operator's default verifier image (DEVMLOPS_VERIFIER_IMAGE)
ALLOWED_IMAGES = [TRITON, SKLEARN_SERVER, VERIFIER]

EDITOR_VERBS = ["create", "update", "patch", "delete", "deletecollection", "get", "list", "watch"]  # as `edit`
EDITOR_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["modeldeployments", "modelpolicies", "modelapprovals"], "verbs": EDITOR_VERBS},
    {
        "apiGroups": [""],
        "resources": [
            "pods",
            "pods/exec",
            "pods/attach",
            "pods/portforward",  # the built-in edit role grants it
            "pods/ephemeralcontainers",
            "configmaps",
            "secrets",
            "services",
            "endpoints",  # a namespace editor may point a Service of their own anywhere (docs/threat-model.md)
            "replicationcontrollers",  # never sent to the webhook; the Pods their controller makes are
            "replicationcontrollers/scale",
        ],
        "verbs": EDITOR_VERBS,
    },
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": EDITOR_VERBS},
    {
        "apiGroups": ["apps"],
        "resources": [
            "deployments",
            "statefulsets",
            "replicasets",
            "daemonsets",
            "deployments/scale",
            "statefulsets/scale",
            "replicasets/scale",
        ],
        "verbs": EDITOR_VERBS,
    },
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": EDITOR_VERBS},
    {
        "apiGroups": [KSERVE_GROUP],
        "resources": [
            "inferenceservices",
            "servingruntimes",
            "inferencegraphs",
            "trainedmodels",
            "llminferenceservices",
        ],
        "verbs": EDITOR_VERBS,
    },
    # "Can read every object there (so knows every uid, label, annotation and verification plan)."
    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
]


# -- asserting outcomes ------------------------------------------------------------------------------------------


def denied(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Run an API call that devmlops must deny; return the denial message.

    Passes only for a 403 whose body names devmlops (not RBAC's 403, not a 404 for a kind that does not exist)."""
    error: ApiException | None = None
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        error = exc
    if error is None:
        pytest.fail(
            f"admitted, but devmlops must deny it: {_describe(call, args)}{_audit_hint(call, args)}", pytrace=False
        )
    message = denial_message(error)
    assert error.status == 403, f"expected a 403 from devmlops, got {error.status}: {message}"
    assert "devmlops" in (error.body or ""), f"a 403, but not from devmlops: {message}"
    return message


def devmlops_denial(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str | None:
    """Run a call that devmlops may refuse (its denial message) or let through (None); any other error fails the
    test. For tests that go through many cases and report every one that came out wrong."""
    error: ApiException | None = None
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        error = exc
    if error is None:
        return None
    assert error.status == 403, f"expected a 403 from devmlops or success, got {error.status}: {denial_message(error)}"
    assert "devmlops" in (error.body or ""), f"a 403, but not from devmlops: {denial_message(error)}"
    return denial_message(error)


def refused_by_devmlops(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Run a call that devmlops may refuse (True) or let through (False); any other error fails the test."""
    return devmlops_denial(call, *args, **kwargs) is not None


_WEBHOOKS: list[DevmlopsStack] = []  # the session's stack, so a failure can quote the webhook's audit line


def _audit_hint(call: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """The webhook's last audit line about the object a call named (why it was admitted), if there is one."""
    names = {a for a in args if isinstance(a, str)}
    kinds = {getattr(call, "__name__", "").replace("_", "").lower()}
    for sent in args:
        if isinstance(sent, dict):
            names.add(str((sent.get("metadata") or {}).get("name") or ""))
            kinds.add(str(sent.get("kind") or "").lower())
    if not _WEBHOOKS or _WEBHOOKS[0].webhook is None:
        return ""
    records = []
    for line in _WEBHOOKS[0].webhook.log_text().splitlines()[-400:]:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    about = [r for r in records if isinstance(r, dict) and r.get("name") in names and not r.get("dryRun")]
    same_kind = [r for r in about if any(str(r.get("kind", "")).lower() in k for k in kinds if k)]
    if same_kind:
        return f"; the webhook's audit line: {json.dumps(same_kind[-1])[:600]}"
    return "; the webhook wrote no audit line for it (did the API server call it?)"


def _describe(call: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """The call and the object (or patch) it sent, short, for a failure message."""
    sent = next((a for a in reversed(args) if isinstance(a, dict | list)), None)
    if isinstance(sent, dict) and "kind" in sent:
        what = f"{sent['kind']} {sent.get('metadata', {}).get('name', '')}"
    else:
        what = json.dumps(sent)[:300] if sent is not None else ""
    return f"{getattr(call, '__name__', call)}({what})"


def create_model_deployment(client: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    """Create ``body`` as a ModelDeployment for real (so the webhook's audit line is quoted if it is admitted)."""
    return k8s.CustomObjectsApi(client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", body
    )


def admitted(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an API call that must succeed (a positive control); fail with the API server's message if it does not."""
    try:
        return call(*args, **kwargs)
    except ApiException as exc:
        pytest.fail(f"denied, but must be admitted: {exc.status} {denial_message(exc)}", pytrace=False)


def forbidden_by_rbac(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Run an API call that the attacker's Role does not allow at all (a 403 that is not devmlops's)."""
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 403, denial_message(caught.value)
    return denial_message(caught.value)


def not_denied_by_devmlops(call: Callable[..., Any], *args: Any, **kwargs: Any) -> ApiException | None:
    """Run a call that devmlops must let through although something after it may still fail (an exec to a Pod that
    no kubelet runs answers 400 "does not have a host assigned"); return that later error, if any."""
    error: ApiException | None = None
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        error = exc
    if error is not None:
        assert not (error.status == 403 and "devmlops" in (error.body or "")), (
            f"denied by devmlops, but must be allowed: {denial_message(error)}"
        )
    return error


def as_dict(obj: Any) -> dict[str, Any]:
    """A typed client object as the API server's JSON (camelCase keys)."""
    return cast(dict[str, Any], k8s.ApiClient().sanitize_for_serialization(obj))


# -- objects -----------------------------------------------------------------------------------------------------


def owner_ref(obj: dict[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """A controller ownerReference to ``obj`` (a dict as the API server returns it), uid included."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def container(name: str, image: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **fields}


def pod_spec(
    *images: str,
    init_images: tuple[str, ...] = (),
    service_account: str | None = None,
    restart_policy: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container(f"c{i}", image) for i, image in enumerate(images)]}
    if init_images:
        spec["initContainers"] = [container(f"init{i}", image) for i, image in enumerate(init_images)]
    if service_account:
        spec["serviceAccountName"] = service_account
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    return spec


def pod(
    name: str,
    spec: dict[str, Any],
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}, "annotations": annotations or {}}
    if owners:
        metadata["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def workload(
    kind: str,
    name: str,
    spec: dict[str, Any],
    *,
    labels: dict[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """A Deployment, StatefulSet, ReplicaSet, DaemonSet, Job or CronJob whose Pods run ``spec``."""
    selector = {"app": name}
    template = {"metadata": {"labels": dict(selector)}, "spec": spec}
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if owners:
        metadata["ownerReferences"] = owners
    body: dict[str, Any]
    if kind == "Job":
        template["spec"] = {**spec, "restartPolicy": "Never"}
        body = {"template": template}
    elif kind == "CronJob":
        job_template = {"spec": {"template": {**template, "spec": {**spec, "restartPolicy": "Never"}}}}
        body = {"schedule": "*/5 * * * *", "jobTemplate": job_template}
    else:
        body = {"selector": {"matchLabels": selector}, "template": template}
        if kind != "DaemonSet":
            body["replicas"] = replicas
        if kind == "StatefulSet":
            body["serviceName"] = name
    api_version = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": body}


def create_workload(client: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    """Create any workload kind ``workload()`` builds, through the typed client of its group."""
    apps, batch = k8s.AppsV1Api(client), k8s.BatchV1Api(client)
    creators: dict[str, Callable[..., Any]] = {
        "Deployment": apps.create_namespaced_deployment,
        "StatefulSet": apps.create_namespaced_stateful_set,
        "ReplicaSet": apps.create_namespaced_replica_set,
        "DaemonSet": apps.create_namespaced_daemon_set,
        "Job": batch.create_namespaced_job,
        "CronJob": batch.create_namespaced_cron_job,
    }
    return creators[body["kind"]](namespace, body)


def exemption(
    name: str,
    namespaces: list[str],
    *,
    images: list[str],
    service_accounts: list[str],
    reason: str = "log shipping for the platform team",
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterWorkloadExemption",
        "metadata": {"name": name[:63]},
        "spec": {"namespaces": namespaces, "reason": reason, "images": images, "serviceAccounts": service_accounts},
    }


def break_glass(
    name: str,
    namespaces: list[str],
    *,
    users: list[str] | None = None,
    groups: list[str] | None = None,
    expires_in: dt.timedelta = dt.timedelta(hours=1),
    reason: str = "incident 4711: inspect the model server",
) -> dict[str, Any]:
    expires = (dt.datetime.now(dt.UTC) + expires_in).replace(microsecond=0).isoformat()
    spec: dict[str, Any] = {"namespaces": namespaces, "expires": expires, "reason": reason}
    if users:
        spec["users"] = users
    if groups:
        spec["groups"] = groups
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterBreakGlass",
        "metadata": {"name": name[:63]},
        "spec": spec,
    }


@contextmanager
def cluster_object(admin: k8s.ApiClient, plural: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Create a cluster-scoped devmlops object as the cluster admin; delete it afterwards."""
    api = k8s.CustomObjectsApi(admin)
    created = cast(dict[str, Any], api.create_cluster_custom_object(GROUP, VERSION, plural, body))
    try:
        yield created
    finally:
        try:
            api.delete_cluster_custom_object(GROUP, VERSION, plural, body["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise


@contextmanager
def installed_exemption(admin: k8s.ApiClient, body: dict[str, Any], *, timeout: float = 15.0) -> Iterator[None]:
    """A ClusterWorkloadExemption, once the webhook admits a Pod it covers (a dry run in its first namespace)."""
    spec = body["spec"]
    probe: Any = pod(
        "exemption-probe",
        {
            "containers": [container("probe", spec["images"][0])],
            "serviceAccountName": spec["serviceAccounts"][0],
        },
    )
    core = k8s.CoreV1Api(admin)
    with cluster_object(admin, "clusterworkloadexemptions", body):
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                core.create_namespaced_pod(spec["namespaces"][0], probe, dry_run="All")
                break
            except ApiException as exc:
                last = denial_message(exc)
            if time.monotonic() > deadline:
                pytest.fail(f"the exemption {body['metadata']['name']} never took effect: {last}", pytrace=False)
            time.sleep(0.2)
        yield


def connect(client: k8s.ApiClient, namespace: str, name: str, *, how: str = "exec") -> None:
    """``kubectl exec`` (or ``attach``, or ``port-forward``) as a plain POST: the API server runs admission (CONNECT)
    before it looks for a kubelet, so the webhook's answer is what comes back first."""
    core = k8s.CoreV1Api(client)
    if how == "exec":
        core.connect_post_namespaced_pod_exec(name, namespace, command=["sh", "-c", "id"], stdout=True, stderr=True)
    elif how == "portforward":
        core.connect_post_namespaced_pod_portforward(name, namespace, ports="8080")
    else:
        core.connect_post_namespaced_pod_attach(name, namespace, stdout=True, stderr=True)


def wait_until_allowed(probe: Callable[[], object], *, timeout: float = 15.0, what: str) -> None:
    """Repeat ``probe`` until devmlops stops denying it (its caches follow the API server asynchronously)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            probe()
            return
        except ApiException as exc:
            if not (exc.status == 403 and "devmlops" in (exc.body or "")):
                return
            last = denial_message(exc)
        time.sleep(0.2)
    pytest.fail(f"{what} was still denied after {timeout:.0f}s: {last}", pytrace=False)


def wait_until_denied(probe: Callable[[], object], *, timeout: float = 15.0, what: str) -> None:
    """Repeat ``probe`` until devmlops denies it (say, once a namespace came under enforcement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            probe()
        except ApiException as exc:
            if exc.status == 403 and "devmlops" in (exc.body or ""):
                return
        time.sleep(0.2)
    pytest.fail(f"{what}: devmlops did not start denying within {timeout:.0f}s", pytrace=False)


# -- namespaces and the attacker ---------------------------------------------------------------------------------


def _namespace_name(request: pytest.FixtureRequest, suffix: str = "") -> str:
    """Unique per test and at most 41 characters: KServe names hosts "<isvc>-predictor-<namespace>" (63 at most)."""
    readable = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))[:30].strip("-")
    tag = hashlib.sha256((request.node.nodeid + suffix).encode()).hexdigest()[:6]
    return f"atk-{readable}-{tag}"


def user_subject(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "apiGroup": RBAC_API}


def bind_role(
    rbac: k8s.RbacAuthorizationV1Api,
    namespace: str,
    name: str,
    role: str,
    subject: dict[str, Any],
    *,
    kind: str = "Role",
) -> None:
    """A RoleBinding ``name`` of the Role (or ClusterRole) ``role`` to one subject (a user_subject, a
    ServiceAccount)."""
    body: Any = {"metadata": {"name": name}, "roleRef": {"apiGroup": RBAC_API, "kind": kind, "name": role}}
    rbac.create_namespaced_role_binding(namespace, {**body, "subjects": [subject]})


def grant_namespace_editor(
    admin: k8s.ApiClient, control_plane: ControlPlane, namespace: str, user: str = ATTACKER
) -> None:
    """The Role "namespace-editor" (created once per namespace), bound to ``user``; the attacker is bound to
    Kubernetes's own ``edit`` ClusterRole too, as ``kubectl create rolebinding --clusterrole=edit`` binds a namespace
    editor (the Role adds what ``edit`` lacks: ephemeral containers, Endpoints and EndpointSlices, the devmlops and
    KServe kinds, reading everything). Returns once the authorizer honours both."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    role: Any = {"metadata": {"name": EDITOR_ROLE}, "rules": EDITOR_RULES}
    try:
        rbac.create_namespaced_role(namespace, role)
    except ApiException as exc:
        if exc.status != 409:
            raise
    bind_role(
        rbac, namespace, EDITOR_ROLE if user == ATTACKER else f"{EDITOR_ROLE}-{user}", EDITOR_ROLE, user_subject(user)
    )
    checks = [("", "pods")]
    if user == ATTACKER:
        bind_role(rbac, namespace, f"{BUILT_IN_EDIT}-{user}", BUILT_IN_EDIT, user_subject(user), kind="ClusterRole")
        checks.append(("autoscaling", "horizontalpodautoscalers"))  # `edit`'s alone, once aggregation filled it
    with api_client(control_plane.kubeconfig(user)) as client:
        auth = k8s.AuthorizationV1Api(client)
        for group, resource in checks:
            attributes = {"namespace": namespace, "verb": "create", "group": group, "resource": resource}
            review: Any = {"spec": {"resourceAttributes": attributes}}
            eventually(
                lambda review=review: getattr(auth.create_self_subject_access_review(review).status, "allowed", False),
                timeout=30,
                what=f"{user}'s right to create {resource} in {namespace}",
            )


@contextmanager
def attack_namespace(
    admin: k8s.ApiClient, control_plane: ControlPlane, name: str, *, enforced: bool = True
) -> Iterator[str]:
    """A namespace the cluster admin creates (and, ``enforced``, puts under enforcement), with mallory as editor."""
    core = k8s.CoreV1Api(admin)
    labels = {ENFORCE_LABEL: "true"} if enforced else {}
    body: Any = {"metadata": {"name": name, "labels": labels}}
    core.create_namespace(body)
    try:
        grant_namespace_editor(admin, control_plane, name)
        if enforced and pods_reviewed(admin):
            # The webhook learns of the namespace through a watch; an attack asserted before that would test the
            # lag, not the rule (test_pods has a test of its own for the lag).
            probe: Any = pod("enforcement-probe", pod_spec(BENIGN))
            wait_until_denied(
                lambda: core.create_namespaced_pod(name, probe, dry_run="All"), what=f"enforcement of {name}"
            )
        yield name
    finally:
        core.delete_namespace(name)


def pods_reviewed(admin: k8s.ApiClient) -> bool:
    """Whether any validating webhook registration sends Pods to a webhook (not so before issue 13)."""
    configs = k8s.AdmissionregistrationV1Api(admin).list_validating_webhook_configuration().items
    return any("pods" in (rule.resources or []) for c in configs for w in c.webhooks or [] for rule in w.rules or [])


@pytest.fixture(autouse=True)
def _through_the_webhook(stack: DevmlopsStack) -> None:
    """Every attack goes through the registered webhook and the running operator."""
    _WEBHOOKS[:] = [stack]


@pytest.fixture
def enforced_namespace(
    admin: k8s.ApiClient, control_plane: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace under enforcement where mallory is a namespace editor."""
    with attack_namespace(admin, control_plane, _namespace_name(request)) as name:
        yield name


@pytest.fixture
def plain_namespace(admin: k8s.ApiClient, control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace NOT under enforcement where mallory is a namespace editor."""
    with attack_namespace(admin, control_plane, _namespace_name(request, "plain"), enforced=False) as name:
        yield name


@pytest.fixture
def new_namespace(
    admin: k8s.ApiClient, control_plane: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """A factory for more namespaces in one test: ``new_namespace("b", enforced=True)``."""
    with ExitStack() as stack:

        def make(suffix: str, *, enforced: bool = True) -> str:
            name = _namespace_name(request, suffix)
            return stack.enter_context(attack_namespace(admin, control_plane, name, enforced=enforced))

        yield make


@pytest.fixture
def mallory(control_plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    """The attacker's client: a namespace editor (``edit`` and the Role, in the namespaces the fixtures above make),
    nothing more."""
    with api_client(control_plane.kubeconfig(ATTACKER)) as client:
        yield client


@pytest.fixture
def as_user(control_plane: ControlPlane) -> Iterator[Callable[[str], k8s.ApiClient]]:
    """Clients for other identities (``as_user(OPERATOR_USER)``, ``as_user("alice")``), closed afterwards."""
    with ExitStack() as stack:

        def make(user: str) -> k8s.ApiClient:
            return stack.enter_context(api_client(control_plane.kubeconfig(user)))

        yield make


@pytest.fixture
def bob(admin: k8s.ApiClient, as_user: Callable[[str], k8s.ApiClient], enforced_namespace: str) -> k8s.ApiClient:
    """bob, an approver (devmlops:approvers) who edits the enforced namespace too: the honest second person."""
    binding: Any = {
        "metadata": {"name": "bob-edits"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": EDITOR_ROLE},
        "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    k8s.RbacAuthorizationV1Api(admin).create_namespaced_role_binding(enforced_namespace, binding)
    return as_user("bob")


# -- a signed, admitted model to attack --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def attack_model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    """A model signed by the key the cluster policy trusts."""
    return signed_model(tmp_path_factory.mktemp("attacks"), "fraud")


@pytest.fixture(scope="session")
def rogue_model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    """Mallory's poisoned "fraud": other bytes (another digest), signed by her own key, which nobody trusts."""
    directory = tmp_path_factory.mktemp("attacks-rogue")
    key = make_key(directory, "mallory")
    weights = {"weights.bin": b"\xba\xd0" * 512, "config.json": b'{"layers": 2, "backdoor": true}'}
    model = make_model(directory / "fraud", weights)
    bundle = sign_with_key(model, key, directory / "fraud.sig")
    authority = Authority(name="mallory", kind="key", public_key=key.public_pem)
    digest = OmsVerifier().verify_model(bundle, authority).digest
    sbom = cyclonedx_sbom("fraud", digest)
    return SignedModel(key, bundle, digest, sbom, sign_blob_with_key(sbom.encode(), key.private.read_bytes()))


def policy_name(namespace: str) -> str:
    return f"atk-{namespace}"[:63]


@pytest.fixture
def trusted(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel
) -> Iterator[dict[str, Any]]:
    """A ClusterModelPolicy trusting ``attack_model``'s key for the enforced namespace (images allow-listed:
    ``ALLOWED_IMAGES``), and the bundle in the labelled ConfigMap "evidence"; yields the policy."""
    with trusting(
        admin,
        stack,
        enforced_namespace,
        attack_model,
        policy=policy_name(enforced_namespace),
        allow={"images": list(ALLOWED_IMAGES)},
    ) as body:
        yield body


@dataclass(frozen=True)
class Served:
    """An admitted ModelDeployment and the child the operator made for it, as stored."""

    namespace: str
    model_deployment: dict[str, Any]
    child: dict[str, Any]
    policy: dict[str, Any]


def _get_isvc(admin: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return cast(
            dict[str, Any],
            k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
                KSERVE_GROUP, "v1beta1", namespace, "inferenceservices", name
            ),
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _get_deployment(admin: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return as_dict(k8s.AppsV1Api(admin).read_namespaced_deployment(name, namespace))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def serve(
    admin: k8s.ApiClient,
    namespace: str,
    model: SignedModel,
    policy: dict[str, Any],
    *,
    name: str = "fraud",
    **spec: Any,
) -> Served:
    """Create a signed ModelDeployment (as the cluster admin) and wait for the operator's child."""
    doc = signed_by_evidence(name, model, **spec)
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    create = k8s.CustomObjectsApi(admin).create_namespaced_custom_object
    # The webhook's caches follow the namespace, the evidence ConfigMap and the policy asynchronously: dry-run until
    # it admits the model, so the fixture never races them (bounded; the real create must then be admitted).
    wait_until_allowed(
        lambda: create(GROUP, VERSION, namespace, "modeldeployments", doc, dry_run="All"),
        what=f"the signed ModelDeployment {namespace}/{name}",
    )
    md = cast(dict[str, Any], admitted(create, GROUP, VERSION, namespace, "modeldeployments", doc))
    triton = doc["spec"]["runtime"]["kind"] == "triton"
    get = _get_deployment if triton else _get_isvc
    child = eventually(lambda: get(admin, namespace, name), timeout=30, what=f"the operator's child {name}")
    return Served(namespace, md, child, policy)


@pytest.fixture
def served_kserve(
    admin: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, trusted: dict[str, Any]
) -> Served:
    """An admitted KServe ModelDeployment "fraud" and the InferenceService the operator made for it."""
    return serve(admin, enforced_namespace, attack_model, trusted)


@pytest.fixture
def served_triton(
    admin: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, trusted: dict[str, Any]
) -> Served:
    """An admitted Triton ModelDeployment "fraud" and the Deployment the operator made for it."""
    return serve(admin, enforced_namespace, attack_model, trusted, runtime={"kind": "triton", "image": TRITON})


@dataclass(frozen=True)
class ModelPods:
    """What the cluster's controllers made from the operator's Triton Deployment: a ReplicaSet and its Pods."""

    replica_set: dict[str, Any]
    pods: list[dict[str, Any]]


def owned_by(items: list[dict[str, Any]], owner: dict[str, Any]) -> list[dict[str, Any]]:
    uid = owner["metadata"]["uid"]
    return [i for i in items if any(r.get("uid") == uid for r in i["metadata"].get("ownerReferences") or [])]


@pytest.fixture
def triton_pods(admin: k8s.ApiClient, served_triton: Served) -> ModelPods:
    """The ReplicaSet and Pods that the deployment and replicaset controllers make for the served Triton model
    (needs kube-controller-manager in the session stack: no kubelet runs them, they stay Pending)."""
    apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)
    namespace = served_triton.namespace

    def replica_set() -> dict[str, Any] | None:
        items = [as_dict(rs) for rs in apps.list_namespaced_replica_set(namespace).items]
        found = owned_by(items, served_triton.child)
        return found[0] if found else None

    rs = eventually(replica_set, timeout=30, what="the ReplicaSet of the operator's Triton Deployment")
    rs.setdefault("apiVersion", "apps/v1")
    rs.setdefault("kind", "ReplicaSet")

    def pods() -> list[dict[str, Any]]:
        items = [as_dict(p) for p in core.list_namespaced_pod(namespace).items]
        return owned_by(items, rs)

    found = eventually(pods, timeout=30, what="the Pods of the model server's ReplicaSet")
    return ModelPods(rs, found)


def serving_runtime(
    name: str,
    image: str,
    *,
    kind: str = "ServingRuntime",
    sidecar_images: tuple[str, ...] = (),
    worker_images: tuple[str, ...] = (),
    **server: Any,
) -> dict[str, Any]:
    """A KServe (Cluster)ServingRuntime for sklearn whose server runs ``image`` (plus ``server`` fields), with more
    containers beside it and a workerSpec if asked. (KServe's schema has no initContainers: they would be pruned.)"""
    main = {
        "name": "kserve-container",
        "image": image,
        "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"],
        **server,
    }
    spec: dict[str, Any] = {
        "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True}],
        "protocolVersions": ["v1", "v2"],
        "containers": [main, *(container(f"sidecar{i}", image) for i, image in enumerate(sidecar_images))],
    }
    if worker_images:
        spec["workerSpec"] = {"containers": [container(f"worker{i}", image) for i, image in enumerate(worker_images)]}
    return {"apiVersion": f"{KSERVE_GROUP}/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


@contextmanager
def cluster_serving_runtime(client: k8s.ApiClient, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Create a ClusterServingRuntime (as ``client``); delete it afterwards (as the same client)."""
    api = k8s.CustomObjectsApi(client)
    created = cast(
        dict[str, Any], api.create_cluster_custom_object(KSERVE_GROUP, "v1alpha1", "clusterservingruntimes", body)
    )
    try:
        yield created
    finally:
        try:
            api.delete_cluster_custom_object(
                KSERVE_GROUP, "v1alpha1", "clusterservingruntimes", body["metadata"]["name"]
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


@dataclass(frozen=True)
class KServePods:
    """An admitted KServe model whose runtime is a cluster admin's ClusterServingRuntime, and the predictor Pods
    that KServe's controller and the cluster's controllers made for it."""

    served: Served
    runtime: dict[str, Any]
    pods: list[dict[str, Any]]


@pytest.fixture
def kserve_pods(
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
    request: pytest.FixtureRequest,
) -> Iterator[KServePods]:
    """(Needs the real KServe controller and kube-controller-manager in the session stack.)"""
    name = "atk-sklearn-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    with cluster_serving_runtime(admin, serving_runtime(name, SKLEARN_SERVER, kind="ClusterServingRuntime")) as rt:
        served = serve(
            admin, enforced_namespace, attack_model, trusted, runtime={"kind": "kserve", "servingRuntime": name}
        )
        core = k8s.CoreV1Api(admin)
        deadline = time.monotonic() + 60
        while True:
            listed = core.list_namespaced_pod(
                enforced_namespace, label_selector="serving.kserve.io/inferenceservice=fraud"
            )
            if listed.items:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"KServe made no predictor Pod within 60s: {why_not(admin, enforced_namespace)}")
            time.sleep(0.2)
        yield KServePods(served, rt, [as_dict(p) for p in listed.items])


def why_not(admin: k8s.ApiClient, namespace: str) -> str:
    """The InferenceService's conditions and the namespace's Events, for a failure message."""
    isvc = _get_isvc(admin, namespace, "fraud") or {}
    conditions = [
        f"{c.get('type')}={c.get('status')} {c.get('message', '')}".strip()
        for c in (isvc.get("status") or {}).get("conditions") or []
    ]
    events = [
        f"{e.involved_object.kind}/{e.involved_object.name} {e.reason}: {e.message}"
        for e in k8s.CoreV1Api(admin).list_namespaced_event(namespace).items
    ]
    return f"conditions {conditions}; events {events}"
