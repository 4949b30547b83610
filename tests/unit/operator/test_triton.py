from __future__ import annotations

from devmlops.core.manifests import ModelDeployment, parse_model_deployment
from devmlops.core.plan import ENV_PLAN
from devmlops.core.render import (
    ANNOTATION_VERIFICATION,
    CanaryRendering,
    build_inference_service,
    build_triton,
    render_children,
)

DIGEST = "sha256:" + "ab" * 32
IMAGE = "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64


def md(kind: str = "triton") -> ModelDeployment:
    return parse_model_deployment(
        {
            "metadata": {"name": "resnet", "namespace": "vision"},
            "spec": {
                "model": {"name": "resnet", "uri": "s3://models/resnet", "format": "onnx", "digest": DIGEST},
                "runtime": {
                    "kind": kind,
                    "image": IMAGE,
                    "replicas": 3,
                    "resources": {"limits": {"nvidia.com/gpu": 1}},
                },
            },
        }
    )


def test_the_triton_pod_verifies_the_model_before_the_pinned_server_reads_it_read_only() -> None:
    deployment, service = build_triton(md(), plan_json='{"plan": 1}', verifier_image="devmlops:1", policy_revision="r1")
    pod = deployment["spec"]["template"]["spec"]
    (verify,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert verify["args"] == ["storage-initializer", "s3://models/resnet", "/mnt/models"]
    # The plan, and the team's own registry credentials: the Secret of the fixed name in the model's namespace, if
    # there is one (optional; only the storage initializer reads it: the server and the guard get no such entry).
    assert verify["env"] == [
        {"name": ENV_PLAN, "value": '{"plan": 1}'},
        {
            "name": "DEVMLOPS_REGISTRY_AUTH",
            "valueFrom": {
                "secretKeyRef": {"name": "devmlops-registry-auth", "key": ".dockerconfigjson", "optional": True}
            },
        },
    ]
    assert [k for k in ("env", "envFrom") if k in server] == []
    assert "envFrom" not in verify
    assert server["image"] == IMAGE
    assert server["args"] == ["tritonserver", "--model-repository=/mnt/models", "--model-control-mode=none"]
    assert {p["containerPort"] for p in server["ports"]} == {8000, 8001, 8002}
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {"name": "model", "mountPath": "/mnt/models", "readOnly": True} in server["volumeMounts"]
    for container in (verify, server):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["annotations"] == {
        "devmlops.io/model-digest": DIGEST,
        "devmlops.io/policy-revision": "r1",
    }
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in service["spec"]["ports"]] == [8000, 8001, 8002]


def test_kserve_children_route_through_the_verifying_storage_initializer() -> None:
    isvc = build_inference_service(md("kserve"), plan_json='{"plan": 1}', policy_revision="r2")
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "devmlops+s3://models/resnet"
    assert predictor["annotations"] == {ANNOTATION_VERIFICATION: '{"plan": 1}'}
    assert isvc["metadata"]["annotations"]["devmlops.io/policy-revision"] == "r2"


def test_a_triton_model_without_a_gated_rollout_replaces_its_pods_and_the_stable_version_of_one_rolls() -> None:
    """A rolling update kept the old version's Pods serving, undecided, until the new version's were ready
    (attacks/test_rolling_update.py): without a gated rollout every version change replaces the Pods. A gated
    rollout's stable Deployment rolls (each version it runs is decided at every tick, and its guard's share changes
    at each step); its new version's Deployment is replaced like any other."""
    direct = render_children(md(), plan_json="{}", verifier_image="devmlops:1")
    assert direct[0]["kind"] == "Deployment"
    assert direct[0]["spec"]["strategy"] == {"type": "Recreate"}
    gated = parse_model_deployment(
        {
            "metadata": {"name": "fraud", "namespace": "ml"},
            "spec": {
                "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
                "runtime": {"kind": "triton", "image": IMAGE},
                "guard": {"rateLimit": {"requestsPerSecond": 100, "burst": 10}},
                "rollout": {"strategy": "canary", "canary": {"trafficPercent": 10}},
            },
        }
    )
    (stable, _service) = render_children(gated, plan_json="{}", verifier_image="devmlops:1")
    assert "strategy" not in stable["spec"]
    during = CanaryRendering(stable=gated, stable_plan_json="{}", weight=10)
    trying = render_children(gated, plan_json="{}", verifier_image="devmlops:1", canary=during)
    deployments = {c["metadata"]["name"]: c["spec"].get("strategy") for c in trying if c["kind"] == "Deployment"}
    assert deployments == {"fraud": None, "fraud-canary": {"type": "Recreate"}}
