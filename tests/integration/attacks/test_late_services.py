"""Property 1b, after admission: a Service under KServe's name that the admission checks never saw.

The webhook refuses a Service under a model's Service name once the model exists, and a new ModelDeployment whose
Service names a Service no model owns already carries (test_unenforced_services); both read, neither locks. Mallory,
who creates the ModelDeployment herself, controls the timing: her Service written in the instant between the
ModelDeployment's admission and its storage is seen by neither check. KServe keeps a Service it finds under its name
when ports and selector match, whatever its type and owner, so her ExternalName ``fraud-predictor`` with the ports and
selector KServe renders becomes the new model's address, a CNAME to her host.

The test holds the window open through the real API server: a validating webhook of the test's own, registered for
ModelDeployment creates in the test's namespace only, answers mallory's create of "fraud" only when told (the API
server calls validating webhooks in parallel and stores the object once all have answered, as it does when a cluster
runs a slower webhook beside devmlops). Once devmlops's webhook has admitted the create (its audit line), mallory
creates her Service: no ModelDeployment "fraud" is stored yet, so it is admitted. Then the create is let go. The
operator's reconcile must remove her Service (a ``ForeignServiceRemoved`` Warning Event on the ModelDeployment names
it) and KServe must write its own, controlled by the InferenceService. Before the fix her Service stayed, owned by
nothing, and KServe kept it (the test failed waiting for its removal)."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.pki import new_ca
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    SKLEARN_SERVER,
    admitted,
    cluster_serving_runtime,
    policy_name,
    serve,
    serving_runtime,
    wait_until_allowed,
)
from tests.integration.attacks.test_review_findings import EXTERNAL, _impostor_service, _service
from tests.integration.support import GROUP, VERSION, SignedModel, eventually, signed_by_evidence, trusting

REMOVED = "ForeignServiceRemoved"
HOLD_SECONDS = 20  # the longest the test's webhook holds a create (its registration's timeout is longer)


class _Hold:
    """The test's own validating webhook: answers every review at once but a real (not dry-run) create, which it
    holds until ``release`` (or ``HOLD_SECONDS``); ``held`` is set when one arrives, ``seen`` on any review."""

    def __init__(self) -> None:
        self.held, self.release, self.seen = threading.Event(), threading.Event(), threading.Event()

    def answer(self, review: dict[str, Any]) -> dict[str, Any]:
        request = review.get("request") or {}
        self.seen.set()
        if not request.get("dryRun"):
            self.held.set()
            self.release.wait(HOLD_SECONDS)
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": request.get("uid"), "allowed": True},
        }


@contextmanager
def _holding_webhook(admin: k8s.ApiClient, namespace: str, tmp: Any) -> Iterator[_Hold]:
    """Serve ``_Hold`` over TLS on loopback and register it for ModelDeployment creates in ``namespace`` only."""
    hold = _Hold()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.dumps(hold.answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    ca = new_ca("atk-hold-ca")
    cert, key = ca.issue("atk-hold", hosts=["127.0.0.1"]).write(tmp, "hold")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    name = f"atk-hold-{namespace}"[:63]
    config: Any = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "hold.atk.devmlops.io",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{server.server_address[1]}/",
                    "caBundle": base64.b64encode(ca.cert_pem).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE"],
                        "resources": ["modeldeployments"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",  # never in anyone's way should this test die
                "timeoutSeconds": HOLD_SECONDS + 5,
            }
        ],
    }
    api = k8s.AdmissionregistrationV1Api(admin)
    api.create_validating_webhook_configuration(config)
    try:
        yield hold
    finally:
        hold.release.set()
        api.delete_validating_webhook_configuration(name)
        server.shutdown()
        server.server_close()


def _admitted_by_devmlops(stack: DevmlopsStack, namespace: str, name: str) -> bool:
    """devmlops's webhook has answered the real create of ModelDeployment ``namespace/name`` (its audit line)."""
    assert stack.webhook is not None
    for line in stack.webhook.log_text().splitlines()[-400:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and (record.get("kind"), record.get("operation"), record.get("namespace"), record.get("name"))
            == ("ModelDeployment", "CREATE", namespace, name)
            and not record.get("dryRun")
        ):
            return bool(record.get("allowed"))
    return False


def test_a_service_written_while_a_kserve_model_is_admitted_is_removed_and_kserve_writes_its_own(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    new_namespace: Callable[..., str],
    attack_model: SignedModel,
    request: pytest.FixtureRequest,
    tmp_path: Any,
) -> None:
    learned, raced = new_namespace("learned", enforced=False), new_namespace("raced", enforced=False)
    runtime = "atk-sklearn-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    allow = {"images": list(ALLOWED_IMAGES)}
    spec = {"runtime": {"kind": "kserve", "servingRuntime": runtime}}
    with (
        trusting(admin, stack, learned, attack_model, policy=policy_name(learned), allow=allow) as policy,
        trusting(admin, stack, raced, attack_model, policy=policy_name(raced), allow=allow),
        cluster_serving_runtime(admin, serving_runtime(runtime, SKLEARN_SERVER, kind="ClusterServingRuntime")),
    ):
        # KServe's ports and selector for a predictor named fraud-predictor, read off a KServe model elsewhere.
        serve(admin, learned, attack_model, policy, **spec)

        def predictor_service(namespace: str) -> dict[str, Any] | None:
            found = _service(admin, namespace, "fraud-predictor")
            return found if found and (found["metadata"].get("ownerReferences") or []) else None

        impostor = _impostor_service(
            eventually(lambda: predictor_service(learned), timeout=60, what="KServe's Service")
        )

        doc = signed_by_evidence("fraud", attack_model, **spec)
        doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
        create = k8s.CustomObjectsApi(mallory).create_namespaced_custom_object
        wait_until_allowed(
            lambda: create(GROUP, VERSION, raced, "modeldeployments", doc, dry_run="All"), what="the signed model"
        )
        with _holding_webhook(admin, raced, tmp_path) as hold:
            eventually(
                lambda: (create(GROUP, VERSION, raced, "modeldeployments", doc, dry_run="All"), hold.seen.is_set())[1],
                timeout=15,
                what="the test's webhook registered",
            )
            outcome: dict[str, Any] = {}

            def create_model() -> None:
                try:
                    outcome["stored"] = create(GROUP, VERSION, raced, "modeldeployments", doc)
                except ApiException as exc:
                    outcome["error"] = exc

            creating = threading.Thread(target=create_model)
            creating.start()
            try:
                assert hold.held.wait(10), "mallory's create did not reach the test's webhook"
                eventually(lambda: _admitted_by_devmlops(stack, raced, "fraud"), timeout=10, what="devmlops's answer")
                # Not stored yet: the webhook finds no ModelDeployment "fraud", and admits her Service.
                mine = admitted(k8s.CoreV1Api(mallory).create_namespaced_service, raced, cast(Any, impostor))
            finally:
                hold.release.set()
                creating.join(30)
        assert "stored" in outcome, f"mallory's ModelDeployment was not stored: {outcome.get('error')}"

        def hers_gone() -> bool:
            found = _service(admin, raced, "fraud-predictor")
            return found is None or found["metadata"]["uid"] != mine.metadata.uid

        if not _eventually_true(hers_gone, timeout=30):
            kept = _service(admin, raced, "fraud-predictor") or {}
            pytest.fail(
                f"mallory's Service fraud-predictor stayed: type {kept.get('spec', {}).get('type')} -> "
                f"{kept.get('spec', {}).get('externalName')}, owned by "
                f"{kept.get('metadata', {}).get('ownerReferences')}",
                pytrace=False,
            )
        isvc = cast(
            dict[str, Any],
            k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", raced, "inferenceservices", "fraud"
            ),
        )
        kserves = eventually(lambda: predictor_service(raced), timeout=60, what="KServe's own fraud-predictor")
        controllers = [r for r in kserves["metadata"]["ownerReferences"] if r.get("controller")]
        assert [(r["kind"], r["uid"]) for r in controllers] == [("InferenceService", isvc["metadata"]["uid"])]
        assert kserves["spec"].get("type") != "ExternalName"

        def event() -> Any:
            events = k8s.CoreV1Api(admin).list_namespaced_event(raced, field_selector=f"reason={REMOVED}").items
            return next((e for e in events if e.involved_object.name == "fraud"), None)

        found = eventually(event, timeout=15, what=f"a {REMOVED} Event on ModelDeployment fraud")
        assert found.type == "Warning"
        assert found.involved_object.kind == "ModelDeployment"
        assert f"Service {raced}/fraud-predictor (type ExternalName -> {EXTERNAL})" in found.message


def _eventually_true(probe: Callable[[], bool], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.2)
    return False
