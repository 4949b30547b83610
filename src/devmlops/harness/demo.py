"""``make run``: the local control plane, webhook and operator, the samples applied, a table of outcomes."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from devmlops.adapters.kube import api_client, create_object, denial_message
from devmlops.harness.controlplane import ControlPlane, find_tools, load_yaml_documents
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
                ref = md.get("status", {}).get("child")
                child = f"{ref['kind']}/{ref['name']}" if ref else ""
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


def run_demo(*, tools_dir: Path | None, project_dir: Path, once: bool) -> None:
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    bin_dir = find_tools(tools_dir)
    started = time.monotonic()
    try:
        with (
            ControlPlane(bin_dir=bin_dir, crd_paths=[project_dir / "crds"], log=_say) as cp,
            DevmlopsStack(cp, policies=project_dir / "policies") as stack,
        ):
            _say(f"webhook at {stack.webhook_url} (TLS), operator running; up in {time.monotonic() - started:.1f}s")
            unexpected = _show_samples(cp, stack, project_dir / "config" / "samples")
            if once:
                if unexpected:
                    sys.exit(1)
                return
            _say(f"kubeconfig: export KUBECONFIG={cp.kubeconfig()}  (users: {', '.join(cp.users)})")
            _say("running; press Ctrl-C to stop")
            while True:
                for proc in (stack.webhook, stack.operator):
                    if proc is not None:
                        proc.ensure_running()
                time.sleep(1)
    except KeyboardInterrupt:
        _say("stopped")


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
