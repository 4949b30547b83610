"""Evidence attestations: in-toto Statement v1 whose subject is the model's digest, read field by field.

An attestation says something about a model (how it scored, what a scan found) and who says so. It travels as a
Sigstore bundle around a DSSE envelope; the adapter checks the signature, then this module reads the signed
statement. Everything read here comes from signed bytes, so the timestamp, the subject and the predicate type cannot
be changed by whoever carries the bundle; what this module refuses is a statement that is malformed, named field by
field (a ``VerificationFailed``, deterministic and cacheable like any other verdict on a bundle).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devmlops.core.ports import VerificationFailed

__all__ = [
    "DEVMLOPS_PREDICATES",
    "IN_TOTO_STATEMENT",
    "PREDICATE_DATASET_AUDIT",
    "PREDICATE_EVALUATION",
    "PREDICATE_FAIRNESS",
    "PREDICATE_PREFIX",
    "PREDICATE_ROBUSTNESS",
    "PREDICATE_SCAN",
    "Statement",
    "VerifiedAttestation",
    "parse_statement",
    "parse_timestamp",
]

IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
PREDICATE_PREFIX = "https://devmlops.io/attestation/"
PREDICATE_EVALUATION = PREDICATE_PREFIX + "evaluation/v1"
PREDICATE_FAIRNESS = PREDICATE_PREFIX + "fairness/v1"
PREDICATE_ROBUSTNESS = PREDICATE_PREFIX + "robustness/v1"
PREDICATE_SCAN = PREDICATE_PREFIX + "scan/v1"
PREDICATE_DATASET_AUDIT = PREDICATE_PREFIX + "dataset-audit/v1"
# Short names (as the CLI and the EU AI Act tier defaults use them) of the predicates this project defines.
DEVMLOPS_PREDICATES = {
    "evaluation": PREDICATE_EVALUATION,
    "fairness": PREDICATE_FAIRNESS,
    "robustness": PREDICATE_ROBUSTNESS,
    "scan": PREDICATE_SCAN,
    "dataset-audit": PREDICATE_DATASET_AUDIT,
}
_SHA256 = re.compile(r"^[a-f0-9]{64}$")
_MAX_SUBJECTS = 64
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """The signed statement: its subjects (name, ``sha256:<hex>``), predicate type and predicate."""

    predicate_type: str
    subjects: tuple[tuple[str, str], ...]
    predicate: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(digest for _name, digest in self.subjects)

    @property
    def timestamp(self) -> str:
        """The predicate's ``timestamp`` (every devmlops predicate has one); '' when there is none."""
        value = self.predicate.get("timestamp")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedAttestation:
    """An attestation whose signature verified for an authority: the statement and who signed it."""

    statement: Statement
    signer: str


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def parse_statement(payload: bytes) -> Statement:
    """An in-toto Statement v1 from a DSSE payload, or ``VerificationFailed`` naming the wrong field."""
    try:
        raw = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise VerificationFailed(f"the DSSE payload is not JSON: {type(exc).__name__}") from exc
    if not isinstance(raw, dict):
        raise VerificationFailed(f"statement: got {_kind(raw)}, expected an in-toto Statement object")
    if raw.get("_type") != IN_TOTO_STATEMENT:
        raise VerificationFailed(f"statement._type: got {raw.get('_type')!r}, expected {IN_TOTO_STATEMENT!r}")
    predicate_type = raw.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise VerificationFailed(f"statement.predicateType: got {_kind(predicate_type)}, expected a URI")
    subjects_raw = raw.get("subject")
    if not isinstance(subjects_raw, list) or not subjects_raw:
        raise VerificationFailed(f"statement.subject: got {_kind(subjects_raw)}, expected a non-empty list")
    if len(subjects_raw) > _MAX_SUBJECTS:
        raise VerificationFailed(
            f"statement.subject: got {len(subjects_raw)} entries, expected at most {_MAX_SUBJECTS}"
        )
    subjects = []
    for index, subject in enumerate(subjects_raw):
        where = f"statement.subject[{index}]"
        if not isinstance(subject, dict):
            raise VerificationFailed(f"{where}: got {_kind(subject)}, expected an object")
        name = subject.get("name", "")
        if not isinstance(name, str):
            raise VerificationFailed(f"{where}.name: got {_kind(name)}, expected a string")
        digest = subject.get("digest")
        if not isinstance(digest, dict):
            raise VerificationFailed(f"{where}.digest: got {_kind(digest)}, expected an object")
        sha = digest.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise VerificationFailed(f"{where}.digest.sha256: got {sha!r:.80}, expected 64 lowercase hex digits")
        subjects.append((name, f"sha256:{sha}"))
    predicate = raw.get("predicate", {})
    if not isinstance(predicate, dict):
        raise VerificationFailed(f"statement.predicate: got {_kind(predicate)}, expected an object")
    return Statement(predicate_type=predicate_type, subjects=tuple(subjects), predicate=predicate)


def parse_timestamp(text: str) -> dt.datetime | None:
    """An RFC 3339 timestamp with a zone (``Z`` or an offset) as an aware datetime; None when it is not one."""
    if not isinstance(text, str) or not re.match(
        r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", text
    ):
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None
