"""Security review of the load-time scan (adapters/scan.py, core/plan.py): unsafe pickles that ``scan_model``
calls ok, and a policy demanding scan evidence whose serving Pods are not scanned. Each fails on e8db94b."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zipfile
from pathlib import Path

from devmlops.adapters.scan import scan_model
from devmlops.core.plan import VerificationPlan
from devmlops.core.policy import compile_policy


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("id",))


def _model(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "config.json").write_bytes(b"{}")
    return tmp_path


def test_a_protocol_0_pickle_under_a_common_model_name_is_not_skipped(tmp_path: Path) -> None:
    """The scanner picks pickles by extension or by the protocol-2+ opcode ``\\x80``; protocols 0 and 1 start with
    an ordinary opcode (``c``, ``(``), so ``finalized_model.sav`` (scikit-learn's documented name) or any other
    extension is 'skipped' and the plan's scan passes. ``pickle.load``/``joblib.load`` run it all the same."""
    payload = pickle.dumps(_RunsCode(), protocol=0)
    assert payload[:1] != b"\x80"
    scan = scan_model(_model(tmp_path, {"finalized_model.sav": payload}), digests=False)
    assert not scan.ok, [(f.path, f.status) for f in scan.files]


def test_a_compressed_pickle_is_not_skipped(tmp_path: Path) -> None:
    """``model.pkl.gz``: suffix ``.gz``, gzip magic, 'skipped'. joblib.load detects gzip/zlib/xz/lz4 by magic and
    pandas.read_pickle by the ``.gz`` suffix, then unpickle. A compressed file must be opened and scanned, or
    refused as unreadable (status error)."""
    payload = gzip.compress(pickle.dumps(_RunsCode(), protocol=2))
    scan = scan_model(_model(tmp_path, {"model.pkl.gz": payload}), digests=False)
    assert not scan.ok, [(f.path, f.status) for f in scan.files]


def test_a_zip_member_holding_a_protocol_0_pickle_is_not_clean(tmp_path: Path) -> None:
    """A zip (``.zip`` is in the zip set) whose member is a protocol-0 pickle under a name picklescan does not treat
    as a pickle is reported 'clean'."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/x.bin", pickle.dumps(_RunsCode(), protocol=0))
    scan = scan_model(_model(tmp_path, {"model.zip": buffer.getvalue()}), digests=False)
    assert not scan.ok, [(f.path, f.status) for f in scan.files]


def test_scan_evidence_demanded_by_a_risk_tier_also_scans_where_the_bytes_load() -> None:
    """docs/evidence.md: a policy that requires scan evidence puts ``scan: true`` in the plan, so the storage
    initializer scans before the server starts. ``VerificationPlan.for_policies`` looks only at ``spec.evidence``;
    a scan demanded through ``compliance.tiers.<tier>.requiredEvidence`` (docs/policies.md) is a requirement the
    evidence gate enforces (core/gates/evidence.requirements_for) but the serving Pod is never scanned."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    policy = compile_policy(
        {
            "metadata": {"name": "p"},
            "spec": {
                "authorities": [{"name": "release", "key": {"publicKey": pem}}],
                "compliance": {"tiers": {"high": {"requiredEvidence": ["scan"]}}},
            },
        }
    )
    assert any("scan" in t for r in policy.compliance.tiers.values() for t in (r.required_evidence or ()))
    plan = VerificationPlan.for_policies("bundle", "sha256:" + "0" * 64, [policy])
    assert plan.scan, "the tier demands signed scan evidence, the Pod loads the bytes unscanned"
