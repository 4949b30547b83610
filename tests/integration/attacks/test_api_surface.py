"""The API surface review (attacker: mallory, a namespace editor, docs/threat-model.md): every namespaced resource and
subresource that the running API server serves with a write verb, each decided once.

The question for each: can a write to it start a container, or change what a container runs (image, command,
arguments, environment, volumes, mounted bytes), or where a model server's bytes come from? In an enforced namespace
every Pod, its ephemeral containers and every workload reach the webhook, so a write matters only where something
reaches a container without a Pod write: the objects a Pod spec names (read by the kubelet at each start, or live),
and subresources the API server does not send. The table below is the sweep's record, read against the API server's
own discovery, the rules of the built-in ``edit`` ClusterRole that mallory is bound to (as the aggregation controller
filled it) and of the attack Role beside it, and the registered webhook configuration.

None of this found a hole: it passed on the code it was written against. It is a regression test for the next
Kubernetes or KServe: a newly served resource that an editor may write fails here until someone decides it, and a
resource decided as reviewed fails when the registration stops sending it from enforced namespaces.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s

from tests.integration.attacks.conftest import BUILT_IN_EDIT, EDITOR_RULES, KSERVE_GROUP, admitted, container, pod
from tests.integration.support import GROUP, eventually

WRITES = frozenset({"create", "update", "patch"})
ENFORCE_KEY = "devmlops.io/enforce"

# Sent to the webhook from every enforced namespace, with these operations (webhook/registration.py); each write, but
# for EndpointSlices, sent only when they join a Service and are not the EndpointSlice controller's (CONDITIONS).
_CU = ("CREATE", "UPDATE")
REVIEWED: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): _CU,
    ("", "pods/ephemeralcontainers"): ("UPDATE",),
    ("", "pods/exec"): ("CONNECT",),
    ("", "pods/attach"): ("CONNECT",),
    ("", "pods/portforward"): ("CONNECT",),
    ("", "services"): _CU,
    ("apps", "deployments"): _CU,
    ("apps", "replicasets"): _CU,
    ("apps", "statefulsets"): _CU,
    ("apps", "daemonsets"): _CU,
    ("apps", "deployments/scale"): _CU,
    ("apps", "replicasets/scale"): _CU,
    ("apps", "statefulsets/scale"): _CU,
    ("batch", "jobs"): _CU,
    ("batch", "cronjobs"): _CU,
    ("discovery.k8s.io", "endpointslices"): _CU,
    (GROUP, "modeldeployments"): _CU,
    (GROUP, "modelpolicies"): _CU,
    (GROUP, "modelapprovals"): _CU,
    (KSERVE_GROUP, "inferenceservices"): _CU,
    (KSERVE_GROUP, "servingruntimes"): _CU,
    (KSERVE_GROUP, "trainedmodels"): _CU,
    (KSERVE_GROUP, "inferencegraphs"): _CU,
    (KSERVE_GROUP, "llminferenceservices"): _CU,
}

CONDITIONS: dict[tuple[str, str], str] = {("discovery.k8s.io", "endpointslices"): "joins-a-service"}

_SPEC_READ = "a container reads it only where its Pod's spec names it, and every Pod is reviewed"

# Writable by an editor, never sent, and why no container starts or changes through them.
INERT: dict[tuple[str, str], str] = {
    ("", "configmaps"): f"{_SPEC_READ}; model servers name none but what devmlops renders (core/namespacereads.py)",
    ("", "secrets"): f"{_SPEC_READ}; the registry Secret and KServe's credentials are checked (core/storageinit.py)",
    ("", "persistentvolumeclaims"): f"{_SPEC_READ}; no model server mounts one, runtimes may not",
    ("", "serviceaccounts"): "read when a Pod is created; the Pod, as admission completed it, is reviewed",
    ("", "serviceaccounts/token"): "a credential, no container (four eyes: property 7)",
    ("", "replicationcontrollers"): "its controller makes Pods, each reviewed",
    ("", "replicationcontrollers/scale"): "its controller makes Pods, each reviewed",
    ("", "pods/eviction"): "deletes a Pod",
    ("", "pods/proxy"): "dials the Pod's IP, never the loopback a guarded server listens on (property 4)",
    ("", "services/proxy"): "dials a Pod's IP, never the loopback a guarded server listens on (property 4)",
    ("", "endpoints"): "kube-proxy reads EndpointSlices only (property 1b)",
    ("", "events"): "a record, read by nothing that runs",
    ("events.k8s.io", "events"): "a record, read by nothing that runs",
    ("autoscaling", "horizontalpodautoscalers"): (
        "the HPA controller scales through */scale (reviewed), and never a target at zero replicas"
    ),
    ("policy", "poddisruptionbudgets"): "bounds evictions, not scaling",
    ("networking.k8s.io", "ingresses"): "traffic outside what devmlops owns (residual risk), no container",
    ("networking.k8s.io", "networkpolicies"): "allows or drops traffic, no container",
    ("coordination.k8s.io", "leases"): "no controller of devmlops, KServe or the cluster leads on a team's Leases",
    ("resource.k8s.io", "resourceclaims"): f"{_SPEC_READ} (spec.resourceClaims); model servers name none",
    ("resource.k8s.io", "resourceclaimtemplates"): f"{_SPEC_READ} (spec.resourceClaims); model servers name none",
    (KSERVE_GROUP, "llminferenceserviceconfigs"): "read only for LLMInferenceServices, which are refused everywhere",
}

# Served with a write verb, but neither `edit` nor the attack Role grants them to an editor (status subresources are
# never an editor's: asserted below).
NOT_AN_EDITORS: dict[tuple[str, str], str] = {
    ("", "pods/resize"): "resources only: the API server keeps every other field of a resize (tested below)",
    ("", "pods/binding"): "a node for a Pod, not what it runs",
    ("", "bindings"): "a node for a Pod, not what it runs",
    ("", "podtemplates"): "no controller makes Pods from them",
    ("", "limitranges"): "defaults resources when a Pod is created; the Pod is reviewed",
    ("", "resourcequotas"): "counts, no container",
    ("apps", "controllerrevisions"): "a StatefulSet's or DaemonSet's history: the Pods made from it are reviewed",
    ("rbac.authorization.k8s.io", "roles"): "the namespace admin's; rights in one namespace, which is reviewed",
    ("rbac.authorization.k8s.io", "rolebindings"): "the namespace admin's; rights in one namespace, reviewed",
    ("authorization.k8s.io", "localsubjectaccessreviews"): "a question, no object",
    ("storage.k8s.io", "csistoragecapacities"): "a CSI driver's capacity report, no container",
    ("kopf.dev", "kopfpeerings"): "the operator's peering (residual risk: kopf peering objects)",
}


def _get(api: k8s.ApiClient, path: str) -> dict[str, Any]:
    method, url, headers, body, form = api.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, header_params=headers, body=body, post_params=form, _request_timeout=10)
    answer: dict[str, Any] = json.loads(response.read())
    return answer


def served_writable(api: k8s.ApiClient) -> dict[tuple[str, str], set[str]]:
    """Every namespaced (group, resource[/subresource]) the API server serves with create, update or patch, in any
    version, with those verbs."""
    lists = [("", _get(api, "/api/v1"))]
    for group in _get(api, "/apis")["groups"]:
        lists += [(group["name"], _get(api, f"/apis/{v['groupVersion']}")) for v in group["versions"]]
    found: dict[tuple[str, str], set[str]] = {}
    for group, listing in lists:
        for resource in listing["resources"]:
            verbs = set(resource.get("verbs") or []) & WRITES
            if resource.get("namespaced") and verbs:
                found.setdefault((group, resource["name"]), set()).update(verbs)
    return found


def editor_writes(api: k8s.ApiClient, *, attack_role: bool = True) -> set[tuple[str, str]]:
    """What mallory may write: the rules of the ``edit`` ClusterRole she is bound to, and the attack Role's."""
    rbac = k8s.RbacAuthorizationV1Api(api)
    role = eventually(lambda: rbac.read_cluster_role(BUILT_IN_EDIT).rules, timeout=30, what="edit, aggregated")
    rules = [(r.api_groups or [], r.resources or [], r.verbs or []) for r in role]
    rules += [(r["apiGroups"], r["resources"], r["verbs"]) for r in EDITOR_RULES] if attack_role else []
    return {(g, res) for groups, resources, verbs in rules if WRITES & set(verbs) for g in groups for res in resources}


def _sends_from_enforced(webhook: Any, group: str, resource: str, operations: tuple[str, ...]) -> bool:
    """The webhook sends these writes of the resource from enforced namespaces, in every version, unconditionally (or
    under the one condition CONDITIONS names for it)."""
    expressions = (webhook.namespace_selector.match_expressions or []) if webhook.namespace_selector else []
    if any(e.key == ENFORCE_KEY and e.operator == "NotIn" and "true" in (e.values or []) for e in expressions):
        return False  # an entry for namespaces without the label
    conditions = {c.name for c in webhook.match_conditions or []}
    if conditions and conditions != {CONDITIONS.get((group, resource))}:
        return False  # sent only when a condition holds: not every write
    for rule in webhook.rules or []:
        if (
            group in (rule.api_groups or [])
            and resource in (rule.resources or [])
            and (rule.api_versions or []) == ["*"]
            and set(operations) <= set(rule.operations or [])
        ):
            return True
    return False


def test_every_namespaced_write_the_api_server_serves_is_decided(admin: k8s.ApiClient) -> None:
    """Discovery, not a list from memory: each namespaced resource with a write verb is reviewed, inert for a reason,
    or not an editor's; KServe's and devmlops's kinds are decided whether or not a role grants them."""
    served = served_writable(admin)
    decided = REVIEWED.keys() | INERT.keys() | NOT_AN_EDITORS.keys()
    undecided = sorted(k for k in served if k not in decided and not k[1].endswith("/status"))
    assert not undecided, (
        f"served with a write verb and decided nowhere: {undecided}; decide whether a write can start or change a "
        "container (REVIEWED, with the webhook registration sending it, or INERT with the reason)"
    )
    writes = editor_writes(admin)
    status = sorted(k for k in served if k in writes and k[1].endswith("/status"))
    assert not status, f"an editor may write status subresources: {status}"
    granted = sorted(k for k in NOT_AN_EDITORS if k in writes)
    assert not granted, f"decided as no editor's, but an editor may write them: {granted}; decide them again"
    gone = sorted(k for k in (REVIEWED.keys() | INERT.keys()) if k not in served)
    assert not gone, f"decided here but no longer served: {gone}"
    # What docs/threat-model.md says of Kubernetes's own `edit` (the attack Role grants ephemeral containers anyway).
    built_in = editor_writes(admin, attack_role=False)
    assert ("", "pods/ephemeralcontainers") not in built_in, "edit grants ephemeral containers now: say so"
    assert ("", "pods/resize") not in built_in, "edit grants pods/resize now: say so in property 4"


def test_every_reviewed_kind_is_sent_from_enforced_namespaces_in_every_version(admin: k8s.ApiClient) -> None:
    """Each reviewed resource is sent from every enforced namespace, whatever the version the request names: rules of
    apiVersions ["*"], and every webhook with matchPolicy Equivalent (a request through another group or version of
    the same resource is converted and sent too)."""
    webhooks = [
        w
        for config in k8s.AdmissionregistrationV1Api(admin).list_validating_webhook_configuration().items
        for w in config.webhooks or []
        if w.name.endswith(".devmlops.io")
    ]
    assert webhooks, "no devmlops webhook is registered"
    exact = sorted(w.name for w in webhooks if w.match_policy != "Equivalent")
    assert not exact, f"webhooks that match one version only (matchPolicy Exact): {exact}"
    missing = sorted(
        f"{group or 'core'}/{resource} {list(operations)}"
        for (group, resource), operations in REVIEWED.items()
        if not any(_sends_from_enforced(w, group, resource, operations) for w in webhooks)
    )
    assert not missing, f"not sent from enforced namespaces, for every write and version: {missing}"


def test_a_resize_changes_resources_only(admin: k8s.ApiClient, plain_namespace: str) -> None:
    """``pods/resize`` is never sent to the webhook (and ``edit`` does not grant it): whoever may use it changes a
    container's resources and nothing else. A cluster admin's resize that also names another image, and an
    environment variable, is applied without them."""
    core = k8s.CoreV1Api(admin)
    image = "registry.example.com/platform/toolbox@sha256:" + "4" * 64
    resources = {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}
    body: Any = pod("resized", {"containers": [container("main", image, resources=resources)]})
    admitted(core.create_namespaced_pod, plain_namespace, body)
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example.com/mallory/server:latest",
                    "env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "300m"}},
                }
            ]
        }
    }
    core.patch_namespaced_pod_resize("resized", plain_namespace, patch)
    stored = core.read_namespaced_pod("resized", plain_namespace).spec.containers[0]
    assert stored.resources.limits == {"cpu": "300m"}, "the resize itself was not applied"
    assert (stored.image, stored.env) == (image, None), f"a resize changed more than resources: {stored}"
