"""The JSON Schemas of devmlops's attestation predicates (``resources/attestation/*.schema.json``), and the one
function that reads a signed statement into a ``Statement`` whose predicate matches its schema.

Predicate types under ``https://devmlops.io/attestation/`` must be one this release knows (a typo or a newer major
version is refused, never waved through) and must validate against its schema; any other predicate type (SLSA
provenance, a vendor's) is passed on as signed, for Rego conditions to read.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from devmlops.core.attestation import (
    DEVMLOPS_PREDICATES,
    PREDICATE_EVALUATION,
    PREDICATE_PREFIX,
    Statement,
    parse_statement,
)
from devmlops.core.drift import BaselineError, parse_baseline
from devmlops.core.ports import VerificationFailed

__all__ = ["predicate_schema", "read_statement", "validate_predicate"]

_MAX_ERRORS = 3


@functools.cache
def _validators() -> Mapping[str, Draft202012Validator]:
    folder = resources.files("devmlops") / "resources" / "attestation"
    validators = {}
    for short, uri in DEVMLOPS_PREDICATES.items():
        schema = json.loads((folder / f"{short}-v1.schema.json").read_text())
        if schema.get("$id") != uri:
            raise RuntimeError(f"schema {short}-v1: $id {schema.get('$id')!r} is not {uri!r}")
        Draft202012Validator.check_schema(schema)
        validators[uri] = Draft202012Validator(schema, format_checker=FormatChecker())
    return validators


def predicate_schema(predicate_type: str) -> Mapping[str, Any]:
    """The JSON Schema of a devmlops predicate type (KeyError for any other)."""
    return dict(_validators()[predicate_type].schema)


def _where(path: Any) -> str:
    text = "predicate"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def validate_predicate(predicate_type: str, predicate: Mapping[str, Any]) -> None:
    """``VerificationFailed`` naming each wrong field when a devmlops predicate does not match its schema."""
    if not predicate_type.startswith(PREDICATE_PREFIX):
        return
    validator = _validators().get(predicate_type)
    if validator is None:
        known = ", ".join(sorted(_validators()))
        raise VerificationFailed(f"predicateType: got {predicate_type!r}, not a devmlops predicate (known: {known})")
    errors = sorted(validator.iter_errors(predicate), key=lambda e: list(e.absolute_path))
    if errors:
        problems = [f"{_where(e.absolute_path)}: {e.message[:160]}" for e in errors[:_MAX_ERRORS]]
        more = f" (and {len(errors) - _MAX_ERRORS} more)" if len(errors) > _MAX_ERRORS else ""
        raise VerificationFailed(f"{predicate_type} predicate does not match its schema: " + "; ".join(problems) + more)


def read_statement(payload: bytes) -> Statement:
    """A signed DSSE payload as a checked ``Statement``: the in-toto shape, then the predicate's schema."""
    statement = parse_statement(payload)
    validate_predicate(statement.predicate_type, statement.predicate)
    if statement.predicate_type == PREDICATE_EVALUATION and "baseline" in statement.predicate:
        try:  # what a schema cannot say: ascending cut points, shares summing to 1, one bin more than cut points
            parse_baseline(statement.predicate["baseline"], "predicate.baseline")
        except BaselineError as exc:
            raise VerificationFailed(f"{PREDICATE_EVALUATION} predicate: {exc}") from exc
    return statement
