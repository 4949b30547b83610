"""``make run``: the local control plane, webhook and operator, the samples applied, a table of outcomes."""

from __future__ import annotations

import copy
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from devmlops.adapters.kube import api_client, create_object, denial_message
from devmlops.harness.chainview import wait_for_pods
from devmlops.harness.controlplane import ControlPlane, find_tools, load_yaml_documents
from devmlops.harness.evidencedemo import evidence_story
from devmlops.harness.kserve import KServe, local_cluster
from devmlops.harness.mlflow import mlflow_process, wait_ready
from devmlops.harness.node import optional_node
from devmlops.harness.oci import oci_registry, push_image
from devmlops.harness.processes import ManagedProcess
from devmlops.harness.stack import DevmlopsStack

__all__ = ["Outcome", "apply_samples", "format_table", "run_demo"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    name: str
    expected: str
    result: str  # admitted | denied | rejected | error
    why: str
    child: str = ""


def _say(message: str) -> None:
    print(f"[devmlops] {message}", flush=True)


def apply_samples(client: k8s.ApiClient, documents: list[dict[str, Any]]) -> list[Outcome]:
    """Create each document and record what the API server (and through it the webhook) answered."""
    dynamic = DynamicClient(client)
    outcomes = []
    for doc in documents:
        meta = doc.get("metadata", {})
        expected = meta.get("annotations", {}).get("devmlops.io/expect", "")
        try:
            create_object(dynamic, doc)
            outcomes.append(Outcome(doc["kind"], meta["name"], expected, "admitted", "created"))
        except ApiException as exc:
            message = denial_message(exc)
            # Keep the webhook's own words: drop the API server's 'admission webhook "x" denied the request:'.
            _, sep, own = message.partition(" denied the request: ")
            message = own if sep else message
            result = "denied" if sep else "rejected" if exc.status == 422 else "error"
            outcomes.append(Outcome(doc["kind"], meta["name"], expected, result, message))
    return outcomes


def attach_children(client: k8s.ApiClient, outcomes: list[Outcome], *, timeout: float) -> list[Outcome]:
    """Wait (bounded) for the operator to report a child for each admitted ModelDeployment."""
    api = k8s.CustomObjectsApi(client)
    deadline = time.monotonic() + timeout
    result = list(outcomes)
    while time.monotonic() < deadline:
        result = []
        for outcome in outcomes:
            child = ""
            if outcome.kind == "ModelDeployment" and outcome.result == "admitted":
                md = cast(
                    dict[str, Any],
                    api.get_namespaced_custom_object(
                        "devmlops.io", "v1alpha1", "default", "modeldeployments", outcome.name
                    ),
                )
                status = md.get("status") or {}
                ref = status.get("child")
                child = f"{ref['kind']}/{ref['name']}" if ref else ""
                if not child and status.get("phase") == "AwaitingApproval":
                    child = "(awaiting approval)"
            result.append(replace(outcome, child=child) if child else outcome)
        waiting = [o for o in result if o.kind == "ModelDeployment" and o.result == "admitted" and not o.child]
        if not waiting:
            break
        time.sleep(0.5)
    return result


def format_table(outcomes: list[Outcome], width: int = 160) -> str:
    rows = [("KIND/NAME", "RESULT", "EXPECTED", "CHILD", "WHY")]
    for o in outcomes:
        why = o.why if len(o.why) <= width else o.why[: width - 3] + "..."
        rows.append((f"{o.kind}/{o.name}", o.result, o.expected or "-", o.child or "-", why))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4] for row in rows)


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(*, tools_dir: Path | None, project_dir: Path, once: bool, node: bool = False) -> None:
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell, some CI runners): Python
    # then keeps it ignored, and Ctrl-C would leave the demo and every process it started running.
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    bin_dir = find_tools(tools_dir)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="devmlops-registries-") as work:
            # The model registry first: it takes the longest to be ready, and the webhook and the operator are
            # started knowing it (their lookups wait for nothing until a model names it); an OCI registry too.
            mlflow, mlflow_url = mlflow_process(Path(work) / "mlflow", log=_say)
            try:
                with oci_registry(Path(work) / "oci", log=_say) as oci_host:
                    _demo(bin_dir, project_dir, node, once, started, (mlflow, mlflow_url), oci_host)
            finally:
                mlflow.stop()
    except KeyboardInterrupt:
        _say("stopped")


def _demo(
    bin_dir: Path,
    project_dir: Path,
    node: bool,
    once: bool,
    started: float,
    registry: tuple[ManagedProcess, str],
    oci_host: str,
) -> None:
    # kube-controller-manager and the real KServe (controller and webhooks) run beside the API server, so an admitted
    # model becomes an InferenceService, a predictor Deployment, a ReplicaSet and a Pod.
    with local_cluster(bin_dir=bin_dir, project_dir=project_dir, log=_say) as (cp, kserve):
        # OPA watches a copy of policies/, so the live Rego edit below never touches the checkout.
        policies = cp.workdir / "policies"
        shutil.copytree(project_dir / "policies", policies)
        stack = DevmlopsStack(cp, policies=policies)
        stack.extra_args = ["--mlflow-tracking-uri", registry[1], "--oci-plain-http", oci_host]
        with optional_node(cp, bin_dir=bin_dir, enabled=node, log=_say), stack:
            _run(cp, kserve, stack, project_dir, policies, once=once, started=started, registry=registry, oci=oci_host)


def _run(
    cp: ControlPlane,
    kserve: KServe,
    stack: DevmlopsStack,
    project_dir: Path,
    policies: Path,
    *,
    once: bool,
    started: float,
    registry: tuple[ManagedProcess, str],
    oci: str,
) -> None:
    _say(
        f"webhook at {stack.webhook_url} (TLS), OPA at {stack.opa.url if stack.opa else '-'}, operator "
        f"running; up in {time.monotonic() - started:.1f}s"
    )
    unexpected = _show_samples(cp, stack, project_dir / "config" / "samples")
    _show_chain(cp, "default", "fraud-detector")
    unexpected += _compliance_story(cp, policies)
    for name, expected, got in evidence_story(cp, stack, cp.workdir, _say):
        _say(f"UNEXPECTED: {name} was {got}, expected {expected}")
        unexpected.append(Outcome("ModelDeployment", name, expected, got.partition(":")[0], got))
    wait_ready(*registry)
    unexpected += _registry_story(cp, registry[1], project_dir / "config" / "samples")
    unexpected += _image_story(cp, stack, oci, project_dir / "config" / "samples")
    _run_on(cp, kserve, stack, once=once, unexpected=unexpected, extra=(registry[0],))


def _run_on(
    cp: ControlPlane,
    kserve: KServe,
    stack: DevmlopsStack,
    *,
    once: bool,
    unexpected: list[Outcome],
    extra: tuple[ManagedProcess, ...],
) -> None:
    if once:
        if unexpected:
            sys.exit(1)
        return
    _say(f"kubeconfig: export KUBECONFIG={cp.kubeconfig()}  (users: {', '.join(cp.users)})")
    _say("running; press Ctrl-C to stop")
    while True:
        for proc in (stack.webhook, stack.operator, kserve.process, *cp.processes().values(), *extra):
            if proc is not None:
                proc.ensure_running()
        time.sleep(1)


def _show_samples(cp: ControlPlane, stack: DevmlopsStack, samples: Path) -> list[Outcome]:
    """Apply the samples, print the table, return the outcomes that differ from what the samples expect."""
    documents = load_yaml_documents(samples)
    models = [doc for doc in documents if doc.get("kind") == "ModelDeployment"]
    others = [doc for doc in documents if doc.get("kind") != "ModelDeployment"]
    with api_client(cp.kubeconfig()) as client:
        outcomes = apply_samples(client, others)
        # The webhook learns policies through a watch: wait until it has them before models arrive.
        stack.wait_for_policies(sum(o.kind == "ClusterModelPolicy" and o.result == "admitted" for o in outcomes))
        outcomes += attach_children(client, apply_samples(client, models), timeout=30)
    print(format_table(outcomes), flush=True)
    unexpected = [o for o in outcomes if o.expected and o.expected != o.result]
    for o in unexpected:
        _say(f"UNEXPECTED: {o.kind}/{o.name} was {o.result}, expected {o.expected}")
    return unexpected


def _show_chain(cp: ControlPlane, namespace: str, name: str) -> None:
    """What the admitted sample became, object by object down to its Pods (Pending without a node; with one, the
    devmlops storage initializer verifying the bytes, then the model server)."""
    with api_client(cp.kubeconfig()) as client:
        lines = wait_for_pods(client, namespace, name, timeout=60)
    _say(f"the chain of ModelDeployment {namespace}/{name}, as the cluster made it:")
    for line in lines:
        print(f"    {line}", flush=True)


GROUP, VERSION = "devmlops.io", "v1alpha1"
FREEZE_RULE = (
    "package devmlops.eu_ai_act\n\nimport rego.v1\n\n"
    'deny contains "change freeze: no model rollouts until Monday"\n'
    '\tif input.object.metadata.name == "fraud-detector-v2"\n'
)


def _compliance_story(cp: ControlPlane, policies: Path) -> list[Outcome]:
    """High risk waits for a second person; a Rego rule edited live changes a decision. Returns surprises."""
    surprises: list[Outcome] = []
    with api_client(cp.kubeconfig()) as admin, api_client(cp.kubeconfig("bob")) as bob:
        _grant_approvers(admin)
        custom = k8s.CustomObjectsApi(admin)
        phase = _wait_phase(custom, "credit-scoring", {"AwaitingApproval", "Admitted"})
        _say(f"credit-scoring (high risk) is {phase}: no model server until a second person approves")
        md = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", "credit-scoring"),
        )
        approval = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelApproval",
            "metadata": {"name": "credit-scoring"},
            "spec": {
                "modelDeployment": "credit-scoring",
                "digest": md["spec"]["model"]["digest"],
                "comment": "reviewed the conformity assessment",
            },
        }
        k8s.CustomObjectsApi(bob).create_namespaced_custom_object(GROUP, VERSION, "default", "modelapprovals", approval)
        child = _wait_child(custom, "credit-scoring")
        _say(
            f"bob approved it (requested by {md['metadata']['annotations'].get('devmlops.io/requested-by')}): "
            f"now served by {child or 'nothing yet'}"
        )
        if not child:
            surprises.append(Outcome("ModelDeployment", "credit-scoring", "served", "not served", "no child"))
        probe = _probe_model(md)
        before = _dry_run(custom, probe)
        rule = policies / "eu_ai_act" / "demo_freeze.rego"
        rule.write_text(FREEZE_RULE)
        try:
            after = _wait_changed(custom, probe, before)
        finally:
            rule.unlink()
        _say(f"fraud-detector-v2 before the Rego edit: {before or 'admitted'}")
        _say(f"after adding {rule.name} (no restart): {after or 'admitted'}")
        if before or "change freeze" not in after:
            surprises.append(Outcome("ModelDeployment", "fraud-detector-v2", "denied by the new rule", after, ""))
    return surprises


def _grant_approvers(admin: k8s.ApiClient) -> None:
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rules = [
        {"apiGroups": [GROUP], "resources": ["modelapprovals", "modeldeployments"], "verbs": ["create", "get", "list"]}
    ]
    role: Any = {"metadata": {"name": "devmlops-approvers"}, "rules": rules}
    binding: Any = {
        "metadata": {"name": "devmlops-approvers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "devmlops-approvers"},
        "subjects": [{"kind": "Group", "name": "devmlops:approvers", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    rbac.create_namespaced_role("default", role)
    rbac.create_namespaced_role_binding("default", binding)


def _wait_phase(custom: k8s.CustomObjectsApi, name: str, phases: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        md = cast(
            dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", name)
        )
        phase = str((md.get("status") or {}).get("phase") or "")
        if phase in phases:
            return phase
        time.sleep(0.3)
    return phase or "Pending"


def _wait_child(custom: k8s.CustomObjectsApi, name: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = cast(
            dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", name)
        )
        child = (md.get("status") or {}).get("child")
        if child:
            return f"{child['kind']}/{child['name']}"
        time.sleep(0.3)
    return ""


def _probe_model(template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "fraud-detector-v2",
            "labels": {"devmlops.io/eu-ai-act-risk": "limited"},
            "annotations": {"devmlops.io/transparency-notice": "https://example.com/ai-notice"},
        },
        "spec": template["spec"],  # the same signed model, under the name it was signed as
    }


def _dry_run(custom: k8s.CustomObjectsApi, doc: dict[str, Any]) -> str:
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", doc, dry_run="All")
    except ApiException as exc:
        return denial_message(exc).partition(" denied the request: ")[2] or denial_message(exc)
    return ""


def _wait_changed(custom: k8s.CustomObjectsApi, doc: dict[str, Any], before: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    now = before
    while time.monotonic() < deadline and now == before:
        time.sleep(0.3)
        now = _dry_run(custom, doc)
    return now


def _registry_story(cp: ControlPlane, url: str, samples: Path) -> list[Outcome]:
    """fraud-detector registered in a real MLflow server (its signature and digest stored as the version's tags, the
    alias champion on it), the registry the webhook and the operator were started with; a ModelDeployment naming the
    model by alias alone is admitted and served, and its status records the version. Returns surprises."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its client's INFO lines would interleave the demo's
    from devmlops.adapters.mlflowregistry import mlflow_client
    from devmlops.adapters.mlflowsign import RegisteredVersion, store_signature

    sample = next(d for d in load_yaml_documents(samples) if d["metadata"]["name"] == "fraud-detector")
    model = sample["spec"]["model"]
    with api_client(cp.kubeconfig()) as admin:
        custom = k8s.CustomObjectsApi(admin)
        evidence = k8s.CoreV1Api(admin).read_namespaced_config_map("fraud-detector-evidence", "default").data or {}
        client = mlflow_client(url, request_timeout=10)
        client.create_registered_model(model["name"])
        client.create_model_version(model["name"], source=model["uri"])
        version = RegisteredVersion(model["name"], "1", model["uri"])
        store_signature(url, version, bundle=evidence["model.sig"], digest=model["digest"])
        client.set_registered_model_alias(model["name"], "champion", "1")
        _say(f"MLflow at {url}: {model['name']} version 1 registered, signature stored with it, alias champion")
        doc = copy.deepcopy(sample)
        doc["metadata"] = {"name": "fraud-detector-champion", "labels": sample["metadata"]["labels"]}
        doc["metadata"]["annotations"] = {
            k: v for k, v in sample["metadata"]["annotations"].items() if k != "devmlops.io/expect"
        }
        doc["spec"]["model"] = {k: v for k, v in model.items() if k != "version"}
        doc["spec"]["model"]["registry"] = {"mlflow": {"name": model["name"], "alias": "champion"}}
        del doc["spec"]["signature"]  # the version's tag devmlops.io/oms-bundle is the signature
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", doc)
        except ApiException as exc:
            why = denial_message(exc)
            _say(f"fraud-detector-champion (MLflow alias champion): denied: {why}")
            return [Outcome("ModelDeployment", "fraud-detector-champion", "admitted", "denied", why)]
        child = _wait_child(custom, "fraud-detector-champion")
        md = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(
                GROUP, VERSION, "default", "modeldeployments", "fraud-detector-champion"
            ),
        )
        recorded = (md.get("status") or {}).get("registryVersion") or "nothing"
        _say(f"fraud-detector-champion names only MLflow alias champion: admitted, served by {child or 'nothing yet'}")
        _say(f"status.registryVersion: {recorded}")
    if not child:
        return [Outcome("ModelDeployment", "fraud-detector-champion", "served", "not served", "no child")]
    return []


def _image_story(cp: ControlPlane, stack: DevmlopsStack, oci_host: str, samples: Path) -> list[Outcome]:
    """A policy that wants Triton images signed by the platform's key; fraud-detector on a Triton image from the
    local OCI registry that nobody signed is denied, naming the image. Returns surprises."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    documents = load_yaml_documents(samples)
    production = next(d for d in documents if d["kind"] == "ClusterModelPolicy")
    sample = next(d for d in documents if d["metadata"].get("name") == "fraud-detector")
    image = push_image(oci_host, "nvidia/tritonserver", "24.08", b"a Triton image nobody signed")
    platform = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = platform.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    policy = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterModelPolicy",
        "metadata": {"name": "signed-runtime-images"},
        "spec": {
            "selector": {"models": ["fraud-*"]},
            "authorities": production["spec"]["authorities"],
            "imageSignatures": {"authorities": [{"name": "platform-images", "key": {"publicKey": pem}}]},
        },
    }
    doc = copy.deepcopy(sample)
    doc["metadata"] = {"name": "fraud-detector-triton", "labels": sample["metadata"]["labels"]}
    doc["metadata"]["annotations"] = {
        k: v for k, v in sample["metadata"]["annotations"].items() if k != "devmlops.io/expect"
    }
    doc["spec"]["runtime"] = {"kind": "triton", "image": image}
    with api_client(cp.kubeconfig()) as admin:
        custom = k8s.CustomObjectsApi(admin)
        custom.create_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", policy)
        stack.wait_for_policies(present=["signed-runtime-images"])
        why = _dry_run(custom, doc)
        # Removed again: it would hold the KServe sample's runtime image (which nobody signed either) to it too.
        custom.delete_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies", "signed-runtime-images")
        stack.wait_for_policies(absent=["signed-runtime-images"])
    _say("ClusterModelPolicy signed-runtime-images: Triton images must be signed by platform-images (cosign key)")
    _say(f"fraud-detector-triton on {image} (pushed to the OCI registry at {oci_host}, unsigned): {why or 'admitted'}")
    if "image-signature gate" not in why:
        return [Outcome("ModelDeployment", "fraud-detector-triton", "denied (image-signature)", why or "admitted", "")]
    return []
