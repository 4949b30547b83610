"""Regenerate the signed demo model and the samples that `make run` applies (config/samples, config/demo).

A fresh EC key signs the demo model and its SBOM; the private key is thrown away, only the public key goes into
the sample ClusterModelPolicy. Run it with the project's venv: `.venv/bin/python hack/make-samples.py`.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devmlops.adapters.attest import build_statement, sign_attestation
from devmlops.adapters.blobsign import sign_blob_with_key
from devmlops.adapters.modelsign import sign_model
from devmlops.core.attestation import DEVMLOPS_PREDICATES

ROOT = Path(__file__).resolve().parent.parent
LIMITED = {"devmlops.io/transparency-notice": "https://example.com/ai-notice"}
HIGH = {
    "devmlops.io/logging-sink": "loki://ml-audit/credit-scoring",
    "devmlops.io/conformity-evidence": "https://docs.example.com/conformity/credit-scoring",
}
SAMPLES, DEMO = ROOT / "config" / "samples", ROOT / "config" / "demo"
MODEL = DEMO / "fraud-detector"


def write_model() -> None:
    MODEL.mkdir(parents=True, exist_ok=True)
    (MODEL / "config.json").write_text(json.dumps({"model_type": "gradient-boosting", "features": 24}, indent=2) + "\n")
    weights = b"".join(hashlib.sha256(f"demo-weights-{i}".encode()).digest() for i in range(64))
    (MODEL / "model.bin").write_bytes(weights)


def new_key(directory: Path, stem: str) -> tuple[Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"{stem}.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path, key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sbom_for(digest: str) -> str:
    return json.dumps(
        {
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "version": 1,
            "components": [
                {
                    "type": "machine-learning-model",
                    "bom-ref": "fraud-detector",
                    "name": "fraud-detector",
                    "version": "2.3.0",
                    "hashes": [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}],
                    "licenses": [{"license": {"id": "Apache-2.0"}}],
                    "modelCard": {
                        "modelParameters": {"task": "classification", "architectureFamily": "gradient-boosting"},
                        "considerations": {"ethicalConsiderations": [{"name": "false positives block payments"}]},
                    },
                }
            ],
        },
        indent=2,
    )


def dump(path: Path, comment: str, *docs: dict[str, object]) -> None:
    body = "\n---\n".join(yaml.safe_dump(doc, sort_keys=False, width=120) for doc in docs)
    path.write_text(f"# {comment}\n{body}")


def attestations(digest: str, key: Path) -> dict[str, str]:
    """Evaluation, fairness and robustness attestations for the high-risk sample, signed by the evaluators' key.
    The figures are sample values (this placeholder model is never run), not measurements."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tool = {"name": "devmlops evaluate", "version": "0.1.0"}
    data = {"name": "credit-scoring-holdout.csv", "digest": "sha256:" + "5a" * 32, "rows": 2000, "target": "default"}
    groups = {"female": {"count": 980, "accuracy": 0.9, "selectionRate": 0.21},
              "male": {"count": 1020, "accuracy": 0.92, "selectionRate": 0.25}}
    predicates = {
        "evaluation": {"timestamp": stamp, "tool": tool, "dataset": data, "task": "binary-classification",
                       "metrics": {"accuracy": 0.91, "balancedAccuracy": 0.88, "f1": 0.86, "rocAuc": 0.94}},
        "fairness": {"timestamp": stamp, "tool": tool, "dataset": data, "sensitiveFeatures": [
            {"name": "sex", "demographicParityDifference": 0.04, "equalizedOddsDifference": 0.07, "groups": groups}]},
        "robustness": {"timestamp": stamp, "tool": tool, "dataset": data,
                       "attack": {"name": "FastGradientMethod", "library": "adversarial-robustness-toolbox 1.20.1",
                                  "norm": "inf", "epsilon": 0.1},
                       "cleanAccuracy": 0.91, "perturbedAccuracy": 0.84, "accuracyDrop": 0.07},
    }
    return {
        f"{kind}.att.json": sign_attestation(
            build_statement(DEVMLOPS_PREDICATES[kind], body, digest, "fraud-detector"), private_key=key
        )
        for kind, body in predicates.items()
    }


def evidence_requirements(evaluators_pub: str) -> list[dict[str, object]]:
    """What high-risk models must show under the sample policy: the three kinds the high tier demands."""
    evaluators = [{"name": "evaluators", "key": {"publicKey": evaluators_pub}}]
    conditions = {
        "evaluation": {"minMetrics": {"accuracy": 0.85}},
        "fairness": {"sensitiveFeatures": ["sex"], "maxDemographicParityDifference": 0.1,
                     "maxEqualizedOddsDifference": 0.1},
        "robustness": {"minPerturbedAccuracy": 0.8, "minEpsilon": 0.05},
    }
    return [
        {"name": kind, "predicateType": kind, "tiers": ["high"], "authorities": copy.deepcopy(evaluators),
         "conditions": {"package": "devmlops.evidence", "parameters": parameters}}
        for kind, parameters in conditions.items()
    ]


def model_deployment(
    name: str,
    expect: str,
    *,
    digest: str,
    uri: str,
    signature_key: str | None,
    tier: str = "limited",
    annotations: dict[str, str] | None = None,
) -> dict[str, object]:
    spec: dict[str, object] = {
        # Every signed sample deploys the one demo model, under the name it was signed as (policies select by it).
        "model": {"name": "fraud-detector" if signature_key else name, "version": "2.3.0", "uri": uri,
                  "format": "sklearn", "digest": digest},
        "runtime": {"kind": "kserve", "replicas": 2},
    }
    if signature_key:
        spec["signature"] = {"configMapKeyRef": {"name": "fraud-detector-evidence", "key": signature_key}}
        spec["sbom"] = {"format": "cyclonedx",
                        "document": {"configMapKeyRef": {"name": "fraud-detector-evidence", "key": "sbom.cdx.json"}},
                        "signature": {"configMapKeyRef": {"name": "fraud-detector-evidence", "key": "sbom.sig"}}}
    return {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"devmlops.io/eu-ai-act-risk": tier},
                     "annotations": {"devmlops.io/expect": expect, **(annotations or LIMITED)}},
        "spec": spec,
    }


def main() -> None:
    write_model()
    with tempfile.TemporaryDirectory() as tmp:
        release_key, release_pub = new_key(Path(tmp), "release")
        rogue_key, _ = new_key(Path(tmp), "rogue")
        evaluators_key, evaluators_pub = new_key(Path(tmp), "evaluators")
        signature, rogue_signature = Path(tmp) / "model.sig", Path(tmp) / "rogue.sig"
        signed = sign_model(MODEL, signature, private_key=release_key)
        sign_model(MODEL, rogue_signature, private_key=rogue_key)
        sbom = sbom_for(signed.digest)
        sbom_signature = sign_blob_with_key(sbom.encode(), release_key.read_bytes())
        (DEMO / "release.pub").write_bytes(release_pub)
        (DEMO / "fraud-detector.sig").write_text(signature.read_text())
        evidence = {
            "model.sig": signature.read_text(),
            "rogue.sig": rogue_signature.read_text(),
            "sbom.cdx.json": sbom,
            "sbom.sig": sbom_signature,
        }
        signed_evidence = attestations(signed.digest, evaluators_key)
    policy = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ClusterModelPolicy",
        "metadata": {"name": "production-models"},
        "spec": {
            "mode": "enforce",
            "selector": {"models": ["fraud-*", "churn-*", "credit-*", "face-*"]},
            "authorities": [{"name": "release-key", "key": {"publicKey": release_pub.decode()}}],
            "sbom": {"required": True, "formats": ["cyclonedx", "spdx"], "bindToDigest": True,
                     "deniedLicenses": ["AGPL-3.0-only"], "requiredModelCardFields": ["modelParameters.task"]},
            "allow": {"storageUris": ["s3://models-prod/**", "hf://example-org/**"], "runtimes": ["kserve", "triton"]},
            "compliance": {
                "requireRiskLabel": True,
                "approvers": {"groups": ["devmlops:approvers"]},
                "tiers": {"prohibited": {"deny": True}, "high": {"requireApproval": True}},
            },
            "evidence": evidence_requirements(evaluators_pub.decode()),
            "rego": {"packages": ["devmlops.eu_ai_act", "devmlops.licenses"]},
        },
    }
    dump(SAMPLES / "00-policy.yaml", "Who may sign production models, what their SBOM must say, where they may come from, what high risk shows.",
         policy)
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "fraud-detector-evidence", "namespace": "default",
                     "labels": {"devmlops.io/evidence": "true"}},
        "data": evidence,
    }
    dump(SAMPLES / "10-fraud-detector-evidence.yaml",
         "The OMS signature and the signed CycloneDX ML-BOM of config/demo/fraud-detector (labelled so the webhook "
         "reads it).", config_map)
    dump(SAMPLES / "12-credit-scoring-attestations.yaml",
         "Signed evaluation, fairness and robustness attestations for credit-scoring (40-...), about the model digest, "
         "by the evaluators' key of 00-policy.yaml (devmlops attest; the private key was thrown away). Sample figures, "
         "not measurements.",
         {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "credit-scoring-attestations", "namespace": "default",
                       "labels": {"devmlops.io/evidence": "true"}},
          "data": signed_evidence})
    dump(SAMPLES / "11-fraud-detector.yaml", "Signed by release-key, SBOM bound to the signed digest: admitted.",
         model_deployment("fraud-detector", "admitted", digest=signed.digest, uri="s3://models-prod/fraud-detector/2.3.0",
                          signature_key="model.sig"))
    other = "sha256:" + hashlib.sha256(b"other weights").hexdigest()
    dump(SAMPLES / "20-churn-unsigned.yaml", "No signature at all: denied.",
         model_deployment("churn-predictor", "denied", digest=other, uri="s3://models-prod/churn/0.1.0",
                          signature_key=None))
    dump(SAMPLES / "21-fraud-wrong-digest.yaml", "A valid signature, but for other weights than the digest named: denied.",
         model_deployment("fraud-detector-canary", "denied", digest=other, uri="s3://models-prod/fraud-detector/2.4.0",
                          signature_key="model.sig"))
    dump(SAMPLES / "22-fraud-untrusted-source.yaml", "Signed, but stored outside the allow-listed buckets: denied.",
         model_deployment("fraud-detector-scratch", "denied", digest=signed.digest,
                          uri="s3://scratch-bucket/fraud-detector", signature_key="model.sig"))
    dump(SAMPLES / "23-fraud-rogue-signer.yaml", "Signed by a key the policy does not trust: denied.",
         model_deployment("fraud-detector-rogue", "denied", digest=signed.digest,
                          uri="s3://models-prod/fraud-detector/2.3.0", signature_key="rogue.sig"))
    high_risk = model_deployment("credit-scoring", "admitted", digest=signed.digest,
                                 uri="s3://models-prod/credit-scoring/1.0", signature_key="model.sig", tier="high",
                                 annotations=HIGH)
    high_risk["spec"]["attestations"] = [  # type: ignore[index]
        {"configMapKeyRef": {"name": "credit-scoring-attestations", "key": key}} for key in signed_evidence
    ]
    dump(SAMPLES / "40-credit-scoring-high-risk.yaml",
         "High risk (EU AI Act): its signed evaluation, fairness and robustness attestations (12-...) pass the "
         "policy's evidence requirements; admitted with a warning, served only after a second person's ModelApproval.",
         high_risk)
    dump(SAMPLES / "41-face-recognition-prohibited.yaml", "Prohibited (EU AI Act Art. 5): always denied.",
         model_deployment("face-recognition-public", "denied", digest=signed.digest,
                          uri="s3://models-prod/face-recognition/1.0", signature_key="model.sig", tier="prohibited"))
    print(f"demo model {MODEL} signed: {signed.digest}")


if __name__ == "__main__":
    main()
