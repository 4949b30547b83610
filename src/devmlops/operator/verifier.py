"""The operator's signature verifier: cached results over a deadline, as in the webhook.

The operator verifies again on every reconcile and re-check. A verification that does not finish within
``verification_timeout_seconds`` raises ``VerificationUnavailable`` ("signature verification timed out after
3s"): the signature gate reports an error, the reconcile keeps the model server as it is and is retried
(``handlers.py``), and the timeout is never cached. Without the deadline a hung verification would hold a kopf
worker and the reconcile guard of that ModelDeployment for good.
"""

from __future__ import annotations

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.verifycache import CachingVerifier, DeadlineVerifier
from devmlops.core.ports import SignatureVerifier
from devmlops.operator.settings import OperatorSettings

__all__ = ["operator_verifier"]


def operator_verifier(settings: OperatorSettings, inner: SignatureVerifier | None = None) -> CachingVerifier:
    """``inner`` (the real OMS verifier unless a test gives one) behind the deadline, behind the result cache."""
    deadline = DeadlineVerifier(inner or OmsVerifier(), seconds=settings.verification_timeout_seconds)
    return CachingVerifier(deadline)
