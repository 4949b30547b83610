"""The signature gate: a ModelDeployment must carry the OMS signature of its model.

This first slice checks that a signature source is named; cryptographic verification against a policy's
authorities builds on it (issue 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmlops.core.model import GateResult

__all__ = ["GATE", "check_signature_present"]

GATE = "signature"
_SOURCES = ("inline", "configMapKeyRef", "secretKeyRef")


def check_signature_present(spec: Mapping[str, Any]) -> GateResult:
    signature = spec.get("signature")
    if not isinstance(signature, Mapping) or not any(signature.get(source) for source in _SOURCES):
        return GateResult(
            gate=GATE,
            outcome="fail",
            reason="spec.signature is missing: got no signature bundle, expected the model's OMS signature",
            hint="sign the model with `devmlops sign` (or model_signing) and set spec.signature.inline, "
            "spec.signature.configMapKeyRef or spec.signature.secretKeyRef",
        )
    source = next(source for source in _SOURCES if signature.get(source))
    return GateResult(gate=GATE, outcome="pass", reason=f"spec.signature names a bundle ({source})")
