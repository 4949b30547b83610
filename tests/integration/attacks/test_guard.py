"""Property 11, the serving guard cannot be walked around: where a ClusterModelPolicy demands a guard, a
ModelDeployment without one, with a looser one, or on a runtime devmlops cannot guard is denied; the guard is part of
the rendered child, so removing or loosening it, or opening the model server to the Pod network, is denied like any
other change of a child; and the model server listens on the Pod's loopback only. The guard's drift baseline is the
one in the model's signed evaluation evidence: a child carrying another one (or none, or a traffic split nobody
rendered) is denied like any other change. KServe models get the same guard on a ClusterServingRuntime a
ClusterModelPolicy declares to run MLServer (spec.guard.mlserverRuntimes), as KServe's collocated transformer, with
MLServer on the Pod's loopback; on any other runtime a guard is refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.core.drift import baseline_from_columns
from devmlops.harness.controlplane import KSERVE_USER
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    KSERVE_GROUP,
    ROGUE,
    SKLEARN_SERVER,
    TRITON,
    VERIFIER,
    Served,
    admitted,
    as_dict,
    cluster_serving_runtime,
    denied,
    owned_by,
    policy_name,
    serve,
    serving_runtime,
    why_not,
)
from tests.integration.attacks.conftest import create_model_deployment as _create
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    eventually,
    md_status,
    signed_by_evidence,
    trusting,
)
from tests.support.evidence import attestation, now_rfc3339, predicate

LIMITS = {
    "perClient": {"requestsPerSecond": 10, "burst": 20},
    "maxRequestBytes": 65536,
    "protocol": "v2",
    "input": {"injection": True},
}
GUARD = {**LIMITS, "rateLimit": {"requestsPerSecond": 100, "burst": 100}}
TRITON_RUNTIME = {"kind": "triton", "image": TRITON}
OPERATOR = "system:serviceaccount:devmlops-system:devmlops-operator"


@pytest.fixture
def guarding(
    admin: k8s.ApiClient, stack: DevmlopsStack, enforced_namespace: str, attack_model: SignedModel
) -> Iterator[dict[str, Any]]:
    """A ClusterModelPolicy that trusts ``attack_model`` and demands a guard at least as strict as ``LIMITS``."""
    with trusting(
        admin,
        stack,
        enforced_namespace,
        attack_model,
        policy=policy_name(enforced_namespace),
        allow={"images": list(ALLOWED_IMAGES)},
        guard={"required": True, "limits": LIMITS},
    ) as body:
        yield body


@pytest.fixture
def served_guarded(
    admin: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, guarding: dict[str, Any]
) -> Served:
    return serve(admin, enforced_namespace, attack_model, guarding, runtime=TRITON_RUNTIME, guard=GUARD)


def _model(attack_model: SignedModel, **spec: Any) -> dict[str, Any]:
    doc = signed_by_evidence("guarded", attack_model, **spec)
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    return doc


LOOSER: dict[str, tuple[dict[str, Any], str]] = {
    "a-higher-client-rate": (
        {"guard": {**GUARD, "perClient": {"requestsPerSecond": 1000, "burst": 20}}},
        "spec.guard.perClient.requestsPerSecond: found 1000, expected at most 10",
    ),
    "larger-bodies": ({"guard": {**GUARD, "maxRequestBytes": 10_000_000}}, "spec.guard.maxRequestBytes"),
    "no-schema": ({"guard": {k: v for k, v in GUARD.items() if k != "protocol"}}, "spec.guard.protocol"),
    "injection-check-off": ({"guard": {**GUARD, "input": {"injection": False}}}, "spec.guard.input.injection"),
    "log-only": ({"guard": {**GUARD, "action": "log"}}, "spec.guard.action: found 'log', expected 'block'"),
    # Her prompts' answers (and other clients' prompts) in a log she reads: only where the policy allows bodies.
    "bodies-in-the-audit-log": ({"guard": {**GUARD, "auditContent": True}}, "spec.guard.auditContent: found true"),
}


@pytest.mark.parametrize("case", list(LOOSER))
def test_a_model_without_the_guard_its_policy_demands_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, guarding: dict[str, Any], case: str
) -> None:
    spec, expected = LOOSER[case]
    reason = denied(_create, mallory, enforced_namespace, _model(attack_model, runtime=TRITON_RUNTIME, **spec))
    assert expected in reason


def test_a_model_that_declares_no_guard_gets_its_policys_limits_as_its_guard(
    mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, guarding: dict[str, Any]
) -> None:
    """The mutating webhook defaults spec.guard on create; the guard is then the policy's, and the child has it."""
    created = _create(mallory, enforced_namespace, _model(attack_model, runtime=TRITON_RUNTIME))
    assert created["spec"]["guard"] == {**LIMITS, "action": "block", "auditContent": False}


def test_a_guard_demanded_on_a_runtime_devmlops_cannot_guard_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, guarding: dict[str, Any]
) -> None:
    for spec in ({"guard": GUARD}, {}):  # declared, or defaulted from the policy: runtime kserve either way
        reason = denied(_create, mallory, enforced_namespace, _model(attack_model, **spec))
        assert "spec.runtime.kind: found 'kserve'" in reason


def test_dropping_the_guard_from_a_served_model_is_denied(mallory: k8s.ApiClient, served_guarded: Served) -> None:
    name = served_guarded.model_deployment["metadata"]["name"]
    patch = {"spec": {"guard": None}}  # a merge patch that removes the field
    reason = denied(
        k8s.CustomObjectsApi(mallory).patch_namespaced_custom_object,
        GROUP,
        VERSION,
        served_guarded.namespace,
        "modeldeployments",
        name,
        patch,
    )
    assert "spec.guard is missing" in reason


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def _guard(deployment: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in _containers(deployment) if c["name"] == "devmlops-guard")


def _index(deployment: dict[str, Any], name: str) -> int:
    return next(i for i, c in enumerate(_containers(deployment)) if c["name"] == name)


def _without_checks(deployment: dict[str, Any]) -> list[str]:
    return [a if not a.startswith("--config=") else "--config=" + json.dumps({}) for a in _guard(deployment)["args"]]


DeploymentPatch = Callable[[dict[str, Any]], Any]
GUARD_PATCHES: dict[str, DeploymentPatch] = {
    "the-guard-removed": lambda d: [
        {"op": "remove", "path": f"/spec/template/spec/containers/{_index(d, 'devmlops-guard')}"}
    ],
    "the-guards-config-emptied": lambda d: [
        {
            "op": "replace",
            "path": f"/spec/template/spec/containers/{_index(d, 'devmlops-guard')}/args",
            "value": _without_checks(d),
        }
    ],
    "the-guards-image": lambda d: [
        {"op": "replace", "path": f"/spec/template/spec/containers/{_index(d, 'devmlops-guard')}/image", "value": ROGUE}
    ],
    "the-server-on-the-pod-network": lambda d: [
        {
            "op": "replace",
            "path": f"/spec/template/spec/containers/{_index(d, 'triton')}/args",
            "value": ["tritonserver", "--model-repository=/mnt/models", "--model-control-mode=none"],
        }
    ],
    "a-port-around-the-guard": lambda d: [
        {
            "op": "add",
            "path": f"/spec/template/spec/containers/{_index(d, 'triton')}/ports",
            "value": [{"name": "direct", "containerPort": 8080}],
        }
    ],
}


@pytest.mark.parametrize("change", list(GUARD_PATCHES))
def test_loosening_the_guard_of_a_served_model_is_denied(
    mallory: k8s.ApiClient, served_guarded: Served, change: str
) -> None:
    patch = GUARD_PATCHES[change](served_guarded.child)
    apps = k8s.AppsV1Api(mallory)
    name = served_guarded.child["metadata"]["name"]
    denied(apps.patch_namespaced_deployment, name, served_guarded.namespace, patch)


def test_the_served_model_listens_on_the_pods_loopback_behind_the_guard(served_guarded: Served) -> None:
    """The positive control: the operator's Deployment carries the guard, with the ModelDeployment's guard as its
    configuration, on the Pod's ports; Triton on loopback, gRPC and its own metrics off."""
    deployment = served_guarded.child
    guard, server = _guard(deployment), next(c for c in _containers(deployment) if c["name"] == "triton")
    config = json.loads(next(a for a in guard["args"] if a.startswith("--config=")).removeprefix("--config="))
    assert config["perClient"] == GUARD["perClient"]
    assert config["input"] == {"injection": True}
    assert "--upstream=http://127.0.0.1:8080" in guard["args"]
    assert [p["containerPort"] for p in guard["ports"]] == [8000, 9090]
    assert "ports" not in server
    assert "readinessProbe" not in server  # the kubelet reaches Triton through the guard only
    assert guard["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http", "scheme": "HTTP"}
    assert {"--http-address=127.0.0.1", "--allow-grpc=false", "--allow-metrics=false"} <= set(server["args"])


# -- the drift baseline: the signed one, or the child is denied -------------------------------------------------------

SIGNED_BASELINE = baseline_from_columns(
    [[float(i) for i in range(100)], [float(i % 7) for i in range(100)]], ["a", "b"]
)
# What mallory would rather the guard compared with: her traffic's own distribution, so that no drift ever shows.
HER_BASELINE = baseline_from_columns(
    [[float(i) * 10 for i in range(100)], [float(i % 7) for i in range(100)]], ["a", "b"]
)


@pytest.fixture
def served_with_drift(
    admin: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, trusted: dict[str, Any]
) -> Served:
    """A Triton model with drift monitoring whose evaluation attestation (signed by the trusted key) carries a
    baseline; the operator renders it into the guard's configuration."""
    body = {**predicate("evaluation"), "baseline": SIGNED_BASELINE.to_dict()}
    signed = attestation("evaluation", body, attack_model.digest, key=attack_model.key)
    guard = {"protocol": "v2", "drift": {"threshold": 0.2}}
    return serve(
        admin, enforced_namespace, attack_model, trusted, runtime=TRITON_RUNTIME, guard=guard,
        attestations=[{"inline": signed}],
    )  # fmt: skip


def _config(deployment: dict[str, Any]) -> dict[str, Any]:
    arg = next(a for a in _guard(deployment)["args"] if a.startswith("--config="))
    return dict(json.loads(arg.removeprefix("--config=")))


def _with_config(deployment: dict[str, Any], config: dict[str, Any]) -> list[dict[str, Any]]:
    args = [
        a if not a.startswith("--config=") else "--config=" + json.dumps(config) for a in _guard(deployment)["args"]
    ]
    path = f"/spec/template/spec/containers/{_index(deployment, 'devmlops-guard')}/args"
    return [{"op": "replace", "path": path, "value": args}]


def test_the_guards_baseline_is_the_signed_one_and_another_is_denied(
    mallory: k8s.ApiClient, as_user: Callable[[str], k8s.ApiClient], served_with_drift: Served
) -> None:
    """Mallory (a namespace editor) may not write the child at all; and even the operator's identity cannot write a
    guard configuration that is not the rendering from signed evidence: the comparison decides what a child is."""
    child = served_with_drift.child
    config = _config(child)
    assert config["baseline"] == SIGNED_BASELINE.to_dict()  # the positive control: derived from signed evidence
    name, namespace = child["metadata"]["name"], served_with_drift.namespace
    for forged in (
        {**config, "baseline": HER_BASELINE.to_dict()},  # her own baseline: her traffic never drifts
        {k: v for k, v in config.items() if k != "baseline"},  # no baseline: drift monitoring off
        {**config, "split": {"upstream": "http://mallory.example:8000", "weight": 50}},  # half the traffic elsewhere
    ):
        patch = _with_config(child, forged)
        denied(k8s.AppsV1Api(mallory).patch_namespaced_deployment, name, namespace, patch)
        reason = denied(k8s.AppsV1Api(as_user(OPERATOR)).patch_namespaced_deployment, name, namespace, patch)
        assert "containers" in reason, reason  # denied for what it says, not for who sent it
        assert "only the devmlops operator" not in reason


# -- KServe on a ClusterServingRuntime declared to run MLServer ------------------------------------------------------

MLSERVER_IMAGE = "docker.io/seldonio/mlserver@sha256:" + "7" * 64  # pinned; no kubelet pulls it


def mlserver_runtime(name: str) -> dict[str, Any]:
    """A ClusterServingRuntime as KServe's own kserve-mlserver is written, plus MLSERVER_HOST=0.0.0.0 in the runtime's
    env: the rendering's value must win KServe's merge (by name) for the model to be on loopback."""
    server = {
        "name": "kserve-container",
        "image": MLSERVER_IMAGE,
        "env": [
            {"name": "MLSERVER_HOST", "value": "0.0.0.0"},  # noqa: S104 - what the rendering must override
            {"name": "MLSERVER_HTTP_PORT", "value": "8080"},
            {"name": "MLSERVER_GRPC_PORT", "value": "9000"},
            {"name": "MODELS_DIR", "value": "/mnt/models"},
        ],
        "ports": [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}],
    }
    return {
        "apiVersion": f"{KSERVE_GROUP}/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": name},
        "spec": {
            "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": False}],
            "protocolVersions": ["v2"],
            "containers": [server],
        },
    }


@dataclass(frozen=True)
class GuardedKServe:
    """A guarded KServe model, and what KServe's controller made for it: its predictor Deployment and Service."""

    served: Served
    runtime: str
    deployment: dict[str, Any]
    service: dict[str, Any]


@pytest.fixture
def mlserver_declared(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    attack_model: SignedModel,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[dict[str, Any], str]]:
    """A ClusterModelPolicy that trusts ``attack_model``, allow-lists the MLServer image and declares the runtime
    (made here by the cluster admin) to run MLServer; yields the policy and the runtime's name."""
    name = "atk-mlserver-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    with (
        trusting(
            admin,
            stack,
            enforced_namespace,
            attack_model,
            policy=policy_name(enforced_namespace),
            allow={"images": [*ALLOWED_IMAGES, MLSERVER_IMAGE]},
            guard={"mlserverRuntimes": [name]},
        ) as body,
        cluster_serving_runtime(admin, mlserver_runtime(name)),
    ):
        yield body, name


def _kserves(admin: k8s.ApiClient, served: Served, what: str, timeout: float = 60) -> dict[str, Any]:
    """KServe's predictor Deployment (``what`` "deployment") or Service, once its controller made it."""
    apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)
    deadline = time.monotonic() + timeout
    while True:
        if what == "deployment":
            items = [as_dict(d) for d in apps.list_namespaced_deployment(served.namespace).items]
            found = owned_by(items, served.child)
        else:
            items = [as_dict(s) for s in core.list_namespaced_service(served.namespace).items]
            found = [i for i in items if i["metadata"]["name"] == "fraud-predictor"]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"KServe made no predictor {what} within {timeout:.0f}s: {why_not(admin, served.namespace)}")
        time.sleep(0.2)


@pytest.fixture
def guarded_kserve(
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    mlserver_declared: tuple[dict[str, Any], str],
) -> GuardedKServe:
    policy, runtime = mlserver_declared
    served = serve(
        admin, enforced_namespace, attack_model, policy, runtime={"kind": "kserve", "servingRuntime": runtime},
        guard=GUARD,
    )  # fmt: skip
    return GuardedKServe(served, runtime, _kserves(admin, served, "deployment"), _kserves(admin, served, "service"))


def _by_name(containers: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in containers if c["name"] == name)


def test_a_kserve_model_on_a_declared_mlserver_runtime_is_served_behind_the_guard(
    admin: k8s.ApiClient, guarded_kserve: GuardedKServe
) -> None:
    """The positive control, through the real KServe controller: the InferenceService carries the guard as its
    transformer-container; KServe's Deployment (admitted by the webhook) runs it beside MLServer, whose listeners the
    rendering's env puts on loopback (winning over the runtime's MLSERVER_HOST); KServe's Service targets the
    guard's port; and the Pods the controllers make, with their extra container, are admitted."""
    predictor = guarded_kserve.served.child["spec"]["predictor"]
    (guard,) = predictor["containers"]
    assert guard["name"] == "transformer-container"
    assert guard["image"] == VERIFIER
    assert "--upstream=http://127.0.0.1:8080" in guard["args"]
    assert predictor["model"]["runtime"] == guarded_kserve.runtime
    containers = guarded_kserve.deployment["spec"]["template"]["spec"]["containers"]
    assert sorted(c["name"] for c in containers) == ["kserve-container", "transformer-container"]
    deployed_guard, server = _by_name(containers, "transformer-container"), _by_name(containers, "kserve-container")
    assert deployed_guard["image"] == VERIFIER
    assert deployed_guard["args"] == guard["args"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert [e["name"] for e in server["env"]].count("MLSERVER_HOST") == 1
    assert env["MLSERVER_HOST"] == "127.0.0.1"
    assert (env["MLSERVER_HTTP_PORT"], env["MLSERVER_GRPC_PORT"], env["MLSERVER_METRICS_PORT"]) == (
        "8080",
        "8081",
        "8082",
    )
    assert server["image"] == MLSERVER_IMAGE
    assert server["readinessProbe"]["httpGet"]["port"] == 8000  # MLServer is ready when the guard says so
    ports = guarded_kserve.service["spec"]["ports"]
    assert ports[0]["targetPort"] == 8000, ports  # the model's address is the guard
    assert {p["targetPort"] for p in ports} <= {8000, 9090}, ports
    core = k8s.CoreV1Api(admin)
    namespace = guarded_kserve.served.namespace
    deadline = time.monotonic() + 60
    while not (pods := core.list_namespaced_pod(namespace, label_selector="serving.kserve.io/inferenceservice=fraud")):
        if time.monotonic() > deadline:
            pytest.fail(f"no predictor Pod within 60s: {why_not(admin, namespace)}")
        time.sleep(0.2)
    for pod in pods.items:
        assert sorted(c.name for c in pod.spec.containers) == ["kserve-container", "transformer-container"]


def patch_isvc(client: k8s.ApiClient, served: Served, patch: dict[str, Any]) -> Any:
    """A merge patch of the InferenceService (the custom-objects client sends merge patches: lists are replaced)."""
    return k8s.CustomObjectsApi(client).patch_namespaced_custom_object(
        KSERVE_GROUP, "v1beta1", served.namespace, "inferenceservices", "fraud", patch
    )


def _predictor(**fields: Any) -> dict[str, Any]:
    return {"spec": {"predictor": fields}}


def _everywhere(served: Served) -> dict[str, Any]:
    model = served.child["spec"]["predictor"]["model"]
    env = [{**e, "value": "0.0.0.0"} if e["name"] == "MLSERVER_HOST" else e for e in model["env"]]  # noqa: S104
    return _predictor(model={"env": env})


ISVC_PATCHES: dict[str, Callable[[Served], dict[str, Any]]] = {
    "the-guard-dropped": lambda s: _predictor(containers=None),
    "mlserver-on-every-interface": _everywhere,
    "a-port-around-the-guard": lambda s: _predictor(model={"ports": [{"name": "direct", "containerPort": 8080}]}),
    "the-guards-image": lambda s: _predictor(
        containers=[{**s.child["spec"]["predictor"]["containers"][0], "image": ROGUE}]
    ),
}


@pytest.mark.parametrize("change", list(ISVC_PATCHES))
def test_walking_around_the_guard_of_a_kserve_model_is_denied(
    mallory: k8s.ApiClient,
    as_user: Callable[[str], k8s.ApiClient],
    guarded_kserve: GuardedKServe,
    change: str,
) -> None:
    """Mallory may not write the InferenceService; the operator's identity may not write it otherwise than rendered."""
    patch = ISVC_PATCHES[change](guarded_kserve.served)
    denied(patch_isvc, mallory, guarded_kserve.served, patch)
    reason = denied(patch_isvc, as_user(OPERATOR), guarded_kserve.served, patch)
    assert "differs from what devmlops renders" in reason, reason


def test_kserves_deployment_without_the_guard_is_denied_even_from_kserve(
    as_user: Callable[[str], k8s.ApiClient], guarded_kserve: GuardedKServe
) -> None:
    """The webhook does not take KServe's merge on trust: a predictor Deployment without the guard, or with MLServer
    told to listen on every interface, is denied whoever writes it."""
    deployment = guarded_kserve.deployment
    containers = deployment["spec"]["template"]["spec"]["containers"]
    guard_at = next(i for i, c in enumerate(containers) if c["name"] == "transformer-container")
    server_at = next(i for i, c in enumerate(containers) if c["name"] == "kserve-container")
    host_at = next(i for i, e in enumerate(containers[server_at]["env"]) if e["name"] == "MLSERVER_HOST")
    apps = k8s.AppsV1Api(as_user(KSERVE_USER))
    name, namespace = deployment["metadata"]["name"], guarded_kserve.served.namespace
    for patch, expected in (
        ([{"op": "remove", "path": f"/spec/template/spec/containers/{guard_at}"}], "transformer-container"),
        (
            [
                {
                    "op": "replace",
                    "path": f"/spec/template/spec/containers/{server_at}/env/{host_at}/value",
                    "value": "0.0.0.0",  # noqa: S104 - the attack
                }
            ],
            "env MLSERVER_HOST",
        ),
    ):
        reason = denied(apps.patch_namespaced_deployment, name, namespace, patch)
        assert expected in reason, reason


def test_a_guard_on_a_kserve_runtime_no_policy_declares_is_refused(
    mallory: k8s.ApiClient,
    admin: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    mlserver_declared: tuple[dict[str, Any], str],
) -> None:
    """The runtime KServe's own sklearn server runs on (every interface, fixed in the server) is not declared: a
    guard there would not be the only way in."""
    sklearn = serving_runtime("atk-sklearn-undeclared", SKLEARN_SERVER, kind="ClusterServingRuntime")
    with cluster_serving_runtime(admin, sklearn):
        doc = _model(attack_model, runtime={"kind": "kserve", "servingRuntime": "atk-sklearn-undeclared"}, guard=GUARD)
        reason = denied(_create, mallory, enforced_namespace, doc)
    assert "spec.runtime.servingRuntime 'atk-sklearn-undeclared'" in reason
    assert "spec.guard.mlserverRuntimes" in reason
    declared = _model(attack_model, runtime={"kind": "kserve", "servingRuntime": mlserver_declared[1]}, guard=GUARD)
    assert _create(mallory, enforced_namespace, declared)  # the control: the declared runtime is admitted


def test_a_baseline_signed_by_a_key_a_team_policy_names_does_not_become_the_guards(
    mallory: k8s.ApiClient,
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    rogue_model: SignedModel,
    served_with_drift: Served,
) -> None:
    """A ModelPolicy only adds requirements, so mallory may write one that demands an evaluation attestation signed by
    her own key; she then adds to the model an evaluation attestation she signed, newer than the trusted one, with her
    baseline. The operator rendered her baseline into the guard (the newest evaluation of the digest that verified
    for an authority of any selecting policy, hers included), and the webhook, deriving it alike, admitted it: the
    guard compared traffic with what she chose. Only authorities of ClusterModelPolicies pick the guard's baseline."""
    namespace, name = served_with_drift.namespace, served_with_drift.child["metadata"]["name"]
    ours = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelPolicy",
        "metadata": {"name": "ours"},
        "spec": {
            "evidence": [
                {
                    "name": "our-evaluation",
                    "predicateType": "evaluation",
                    "authorities": [{"name": "mallory", "key": {"publicKey": rogue_model.key.public_pem}}],
                }
            ]
        },
    }
    custom = k8s.CustomObjectsApi(mallory)
    admitted(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, "modelpolicies", ours)
    stack.wait_for_policies(present=[f"{namespace}/ours"])
    newer = now_rfc3339(dt.timedelta(minutes=1))
    body = {**predicate("evaluation", timestamp=newer), "baseline": HER_BASELINE.to_dict()}
    digest = served_with_drift.model_deployment["spec"]["model"]["digest"]
    hers = attestation("evaluation", body, digest, key=rogue_model.key)
    current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
    attestations = [*current["spec"]["attestations"], {"inline": hers}]
    patch = {"spec": {"attestations": attestations}}
    updated = admitted(
        custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, "modeldeployments", name, patch
    )
    generation = updated["metadata"]["generation"]
    eventually(
        lambda: md_status(admin, namespace, name).get("observedGeneration") == generation,
        timeout=30,
        what=f"the operator deciding generation {generation} of {name}",
    )
    child = k8s.ApiClient().sanitize_for_serialization(k8s.AppsV1Api(admin).read_namespaced_deployment(name, namespace))
    assert _config(child)["baseline"] == SIGNED_BASELINE.to_dict(), "the guard compares with mallory's baseline"
