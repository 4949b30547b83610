"""Which drift baseline a model's guard gets: the one in the newest evaluation attestation of the model's digest
that verified for an authority of a ClusterModelPolicy selecting the model (never of a team's ModelPolicy).

The operator (rendering) and the webhook (comparing a child with the rendering) both call ``signed_baseline`` on the
same inputs, so the guard's baseline is the signed one or the child is refused; nothing is copied from an object
anyone may edit. Verified the way the evidence gate verifies (``SignatureVerifier.verify_attestation``, cached).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from devmlops.core.attestation import PREDICATE_EVALUATION, parse_timestamp
from devmlops.core.drift import BaselineError, parse_baseline
from devmlops.core.evidence import Document
from devmlops.core.policy import Authority, Policy
from devmlops.core.ports import SignatureVerifier, VerificationFailed

__all__ = ["evaluation_authorities", "monitors_drift", "signed_baseline"]

_EPOCH = dt.datetime.min.replace(tzinfo=dt.UTC)


def monitors_drift(model: Mapping[str, Any]) -> bool:
    """Whether a ModelDeployment (as stored) asks its guard for drift monitoring: only then is a baseline looked
    for (rendering leaves it out otherwise, so both sides skip the verification alike)."""
    spec = model.get("spec") or {}
    guard = spec.get("guard") if isinstance(spec, Mapping) else None
    return isinstance(guard, Mapping) and guard.get("drift") is not None


def evaluation_authorities(policies: Iterable[Policy]) -> tuple[Authority, ...]:
    """Who may sign the baseline a model's guard gets under ``policies``: each ClusterModelPolicy's authorities and
    those of its evidence requirements for the evaluation predicate, each once, in order. A team's ModelPolicy is
    left out: a namespace editor writes it, and a requirement it adds (an evaluation signed by their own key) may
    narrow what is admitted, never choose what the guard compares traffic with."""
    found: dict[Authority, None] = {}
    for policy in policies:
        if policy.namespace:
            continue
        for authority in policy.authorities:
            found.setdefault(authority)
        for requirement in policy.evidence:
            if requirement.predicate_type == PREDICATE_EVALUATION:
                for authority in requirement.authorities:
                    found.setdefault(authority)
    return tuple(found)


def signed_baseline(
    attestations: Sequence[Document], digest: str, authorities: Sequence[Authority], verifier: SignatureVerifier
) -> str:
    """The canonical JSON of the baseline in the newest verified evaluation attestation about ``digest`` ('' when
    none carries one). ``VerificationUnavailable`` propagates: the caller fails closed (retries)."""
    chosen: tuple[dt.datetime, str] | None = None
    for document in attestations:
        if document.text is None:
            continue
        for authority in authorities:
            try:
                verified = verifier.verify_attestation(document.text, authority)
            except VerificationFailed:
                continue
            statement = verified.statement
            if statement.predicate_type != PREDICATE_EVALUATION or digest not in statement.digests:
                break
            raw = statement.predicate.get("baseline")
            if raw is None:
                break
            try:
                baseline = parse_baseline(raw, "predicate.baseline")
            except BaselineError:
                break  # the verifier's schema check refuses it first; a baseline that does not parse is none
            stamp = parse_timestamp(statement.timestamp) or _EPOCH
            if chosen is None or stamp > chosen[0]:
                chosen = (stamp, baseline.to_json())
            break
    return chosen[1] if chosen is not None else ""
