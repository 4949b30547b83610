"""What the API server sends the webhook about Services outside enforcement (webhook/registration.py)."""

from __future__ import annotations

from devmlops.core.workloads import SERVICE_SUFFIXES
from devmlops.webhook.registration import OWNED_BY_MODEL, VALIDATING_ENTRIES, webhook_entry


def test_outside_enforcement_every_service_named_like_a_models_address_is_sent() -> None:
    """KServe keeps a Service it finds under its name: an unowned ExternalName Service named <md>-predictor in a
    namespace without the enforce label took the model's address, never sent to the webhook (owned ones only)."""
    (entry,) = [e for e in VALIDATING_ENTRIES if e.name == "services"]
    assert entry.where == "unenforced"
    (condition,) = webhook_entry(entry, "https://x/validate", b"", 5, "validate")["matchConditions"]
    expression = condition["expression"]
    assert OWNED_BY_MODEL in expression
    for suffix in (s for s in SERVICE_SUFFIXES if s):
        assert f"object.metadata.name.endsWith('{suffix}')" in expression
