"""Evidence the tests make themselves: malicious and clean model files, predicates, signed attestations."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import runpy
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from devmlops.adapters.attest import build_statement, sign_attestation
from devmlops.core.attestation import DEVMLOPS_PREDICATES
from tests.support.models import CertChain, KeyFiles


class _OsSystem:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned > /tmp/devmlops-pwned",))


class _Exec:
    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, ("import os; os.system('id')",))


class _Popen:
    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.Popen, (["id"],))


class _Runpy:
    def __reduce__(self) -> tuple[Any, ...]:
        return (runpy._run_code, ("import os", {}))  # type: ignore[attr-defined]


# builtins.getattr(builtins.__import__('os'), 'system')('id'), written as protocol-0 opcodes (no PROTO header)
GETATTR_PICKLE = b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vid\ntR."


def malicious_files(folder: Path) -> dict[str, Path]:
    """One model file per way of running code on load: each must be found unsafe."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name, payload in (("os_system", _OsSystem()), ("exec", _Exec()), ("popen", _Popen()), ("runpy", _Runpy())):
        files[name] = folder / f"{name}.pkl"
        files[name].write_bytes(pickle.dumps({"weights": [0.1, 0.2], "x": payload}, protocol=4))
    files["getattr"] = folder / "getattr.pkl"
    files["getattr"].write_bytes(GETATTR_PICKLE)
    files["torch_zip"] = folder / "model.pt"
    with zipfile.ZipFile(files["torch_zip"], "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_OsSystem(), protocol=2))
    files["numpy_object"] = folder / "arrays.npy"
    np.save(files["numpy_object"], np.array([_OsSystem()], dtype=object), allow_pickle=True)
    files["renamed"] = folder / "weights.bin.extension-nobody-knows"  # a pickle under a name no rule lists
    files["renamed"].write_bytes(pickle.dumps(_OsSystem(), protocol=4))
    files["keras_lambda"] = folder / "model.keras"
    config = {
        "class_name": "Functional",
        "config": {"layers": [{"class_name": "Lambda", "config": {"name": "evil", "function": "4wEAAAAA"}}]},
    }
    with zipfile.ZipFile(files["keras_lambda"], "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
    return files


def clean_files(folder: Path) -> dict[str, Path]:
    """Model files that run nothing on load (a scikit-learn model pickled, plain data): none is unsafe."""
    import numpy as np

    from devmlops.harness.evidencemodels import train_demo_model

    folder.mkdir(parents=True, exist_ok=True)
    files = {"sklearn": train_demo_model(folder / "model.pkl")}
    files["plain"] = folder / "state.pkl"
    files["plain"].write_bytes(pickle.dumps({"layers": [1, 2.5, "relu"], "bias": None}, protocol=5))
    files["numpy"] = folder / "weights.npy"
    np.save(files["numpy"], np.arange(12, dtype=np.float32))
    files["config"] = folder / "config.json"
    files["config"].write_text('{"layers": 2}')
    files["torch_zip"] = folder / "clean.pt"
    with zipfile.ZipFile(files["torch_zip"], "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"step": 3}, protocol=2))
    return files


def now_rfc3339(delta: dt.timedelta = dt.timedelta(0)) -> str:
    return (dt.datetime.now(dt.UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def predicate(kind: str, *, timestamp: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid predicate of each devmlops kind (resources/attestation/<kind>-v1.schema.json)."""
    tool = {"name": "devmlops evaluate", "version": "0.1.0"}
    dataset = {"name": "held-out.csv", "digest": "sha256:" + "cd" * 32, "rows": 221, "target": "progression"}
    stamp = timestamp or now_rfc3339()
    bodies: dict[str, dict[str, Any]] = {
        "evaluation": {
            "tool": tool,
            "dataset": dataset,
            "task": "binary-classification",
            "metrics": {"accuracy": 0.93, "f1": 0.91},
        },
        "fairness": {
            "tool": tool,
            "dataset": dataset,
            "sensitiveFeatures": [
                {
                    "name": "sex",
                    "demographicParityDifference": 0.04,
                    "equalizedOddsDifference": 0.06,
                    "groups": {
                        "1.0": {"count": 110, "selectionRate": 0.5},
                        "2.0": {"count": 111, "selectionRate": 0.46},
                    },
                }
            ],
        },
        "robustness": {
            "tool": tool,
            "dataset": dataset,
            "attack": {
                "name": "FastGradientMethod",
                "library": "adversarial-robustness-toolbox 1.20.1",
                "epsilon": 0.1,
            },
            "cleanAccuracy": 0.93,
            "perturbedAccuracy": 0.88,
            "accuracyDrop": 0.05,
        },
        "scan": {
            "scanner": {"name": "picklescan", "version": "1.0.5"},
            "summary": {"filesScanned": 1, "unsafe": 0, "suspicious": 0, "errors": 0, "skipped": 0},
            "files": [{"path": "model.pkl", "status": "clean"}],
        },
        "dataset-audit": {
            "datasets": [
                {
                    "name": "diabetes",
                    "licence": "BSD-3-Clause",
                    "provenance": {"source": "scikit-learn bundled data set"},
                    "pii": {"scanned": True, "findings": 0},
                }
            ]
        },
    }
    return {"timestamp": stamp, **bodies[kind], **overrides}


def attestation(
    kind_or_uri: str,
    body: dict[str, Any],
    digest: str,
    *,
    key: KeyFiles | None = None,
    chain: CertChain | None = None,
    name: str = "model",
) -> str:
    """A signed attestation bundle (as ``devmlops attest`` writes it)."""
    uri = DEVMLOPS_PREDICATES.get(kind_or_uri, kind_or_uri)
    statement = build_statement(uri, body, digest, name)
    if chain is not None:
        return sign_attestation(statement, private_key=chain.leaf_key, certificate_chain=[chain.leaf_cert, chain.chain])
    if key is None:
        raise ValueError("give a key or a certificate chain")
    return sign_attestation(statement, private_key=key.private)
