"""``make run``'s evidence story: a real model, really evaluated, scanned and attested, denied for a fairness
threshold and for an unsafe pickle, then admitted once fixed.

Everything is made here, at run time: a release key (signs the models) and an evaluators key (signs the evidence),
logistic regressions trained on scikit-learn's bundled diabetes data (``harness/evidencemodels.py``), their
``devmlops evaluate`` and ``devmlops scan`` predicates, and the attestations. A ClusterModelPolicy selecting the
namespace ``evidence-demo`` requires a fairness attestation (demographic parity difference for ``sex`` at most 0.1)
and a scan attestation (no unsafe file, scikit-learn and numpy globals only), both signed by the evaluators.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.attest import build_statement, sign_attestation
from devmlops.adapters.evaluate import evaluate_model
from devmlops.adapters.kube import api_client
from devmlops.adapters.modelsign import sign_model
from devmlops.adapters.scan import scan_model
from devmlops.core.attestation import PREDICATE_FAIRNESS, PREDICATE_SCAN
from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.evidencemodels import SENSITIVE, TARGET, train_demo_model, write_demo_data
from devmlops.harness.stack import DevmlopsStack

__all__ = ["NAMESPACE", "evidence_story"]

NAMESPACE = "evidence-demo"
POLICY = "evidence-demo"
GROUP, VERSION = "devmlops.io", "v1alpha1"
# os.system('echo pwned') as protocol-0 pickle opcodes: what a poisoned checkpoint carries. It is never loaded here.
_PAYLOAD = b"cos\nsystem\n(S'echo pwned'\ntR."


def _key(folder: Path, stem: str) -> tuple[Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / f"{stem}.key"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def _policy(release_pem: str, evaluators_pem: str) -> dict[str, Any]:
    evaluators = [{"name": "evaluators", "key": {"publicKey": evaluators_pem}}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterModelPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}},
            "authorities": [{"name": "release", "key": {"publicKey": release_pem}}],
            "evidence": [
                {
                    "name": "fairness",
                    "predicateType": "fairness",
                    "authorities": evaluators,
                    "maxAge": "30d",
                    "conditions": {
                        "package": "devmlops.evidence",
                        "parameters": {"sensitiveFeatures": [SENSITIVE], "maxDemographicParityDifference": 0.1},
                    },
                },
                {
                    "name": "scan",
                    "predicateType": "scan",
                    "authorities": evaluators,
                    "conditions": {
                        "package": "devmlops.evidence",
                        "parameters": {"allowedGlobalPrefixes": ["sklearn.", "numpy."]},
                    },
                },
            ],
        },
    }


def _prepared(
    folder: Path, name: str, data: Path, release: Path, evaluators: Path, *, fair: bool, payload: bool
) -> tuple[dict[str, Any], str]:
    """A signed, evaluated, scanned and attested model; the ModelDeployment that carries it, and a summary."""
    model_dir = folder / name
    model = train_demo_model(model_dir / "model.pkl", fair=fair)
    if payload:
        (model_dir / "preprocess.pkl").write_bytes(_PAYLOAD)
    evaluation = evaluate_model(model, data, target=TARGET, sensitive_features=[SENSITIVE], robustness=False)
    scan = scan_model(model_dir)
    signed = sign_model(model_dir, folder / f"{name}.sig", private_key=release)
    bundles = [
        sign_attestation(build_statement(uri, body, signed.digest, name), private_key=evaluators)
        for uri, body in ((PREDICATE_FAIRNESS, evaluation.fairness or {}), (PREDICATE_SCAN, scan.predicate()))
    ]
    (sex,) = (evaluation.fairness or {})["sensitiveFeatures"]
    summary = (
        f"accuracy {evaluation.evaluation['metrics']['accuracy']:.3f}, demographic parity difference for sex "
        f"{sex['demographicParityDifference']:.3f}; scan: {scan.count('unsafe')} unsafe of {len(scan.files)} file(s)"
    )
    doc = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "diabetes", "namespace": NAMESPACE},
        "spec": {
            "model": {"name": name, "uri": f"s3://models/{name}", "format": "sklearn", "digest": signed.digest},
            "runtime": {"kind": "kserve"},
            "signature": {"inline": (folder / f"{name}.sig").read_text()},
            "attestations": [{"inline": b} for b in bundles],
        },
    }
    return doc, summary


def evidence_story(
    cp: ControlPlane, stack: DevmlopsStack, workdir: Path, say: Callable[[str], None]
) -> list[tuple[str, str, str]]:
    """Apply the three versions; return (version, expected, what happened) for each that did not go as expected."""
    folder = workdir / "evidence-demo"
    folder.mkdir(parents=True, exist_ok=True)
    release, release_pem = _key(folder, "release")
    evaluators, evaluators_pem = _key(folder, "evaluators")
    data = write_demo_data(folder / "held-out.csv")
    versions = [
        ("diabetes-unfair", "denied", {"fair": False, "payload": False}),
        ("diabetes-poisoned", "denied", {"fair": True, "payload": True}),
        ("diabetes-fixed", "admitted", {"fair": True, "payload": False}),
    ]
    surprises = []
    with api_client(cp.kubeconfig()) as admin:
        namespace: Any = {"metadata": {"name": NAMESPACE}}
        k8s.CoreV1Api(admin).create_namespace(namespace)
        custom = k8s.CustomObjectsApi(admin)
        custom.create_cluster_custom_object(
            GROUP, VERSION, "clustermodelpolicies", _policy(release_pem, evaluators_pem)
        )
        stack.wait_for_policies(present=[POLICY])
        say(f"evidence: ClusterModelPolicy {POLICY} requires fairness and scan attestations signed by the evaluators")
        for name, expected, how in versions:
            doc, summary = _prepared(folder, name, data, release, evaluators, **how)
            say(f"evidence: {name}: {summary}")
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", doc)
                result, why = "admitted", "created"
            except ApiException as exc:
                body = json.loads(exc.body or "{}") if (exc.body or "").startswith("{") else {}
                message = str(body.get("message") or exc.reason)
                result, why = "denied", message.partition(" denied the request: ")[2] or message
            say(f"evidence: {name} (ModelDeployment {NAMESPACE}/diabetes): {result}: {why}")
            if result != expected:
                surprises.append((name, expected, f"{result}: {why}"))
    return surprises
