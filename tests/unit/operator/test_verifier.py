"""The operator's verifier has a deadline, set like the webhook's: a slow verification is a "timed out" error that
denies (the reconcile keeps the state and retries), is never cached, and never hangs the reconcile."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devmlops.adapters.oms import OmsVerifier
from devmlops.cli import cli
from devmlops.core.decision import decide
from devmlops.core.policy import Authority
from devmlops.core.ports import SignedModel, VerificationUnavailable
from devmlops.operator.settings import OperatorSettings
from devmlops.operator.verifier import operator_verifier
from devmlops.webhook.settings import WebhookSettings
from tests.support.models import make_key, make_model, sign_with_key
from tests.unit.core.fakes import bundle
from tests.unit.core.test_gates import evidence, policies, policy, request, spec


class Slow:
    """A verifier that answers only once released (or after 10 s): a hung library call."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        self.calls += 1
        self.release.wait(10)
        raise AssertionError("a hung verification must not be waited for")

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        return self.verify_model(bundle, authority).signer


@pytest.fixture
def slow() -> Any:
    verifier = Slow()
    yield verifier
    verifier.release.set()


def test_a_verification_past_the_operators_deadline_is_timed_out_and_not_cached(slow: Slow) -> None:
    verifier = operator_verifier(OperatorSettings(verification_timeout_seconds=0.2), inner=slow)
    authority = Authority(name="release", kind="key", public_key="pem")
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(VerificationUnavailable, match=r"signature verification timed out after 0.2s"):
            verifier.verify_model("bundle", authority)
        assert time.monotonic() - started < 2
    assert slow.calls == 2  # a timeout is asked again next time


def test_a_timed_out_verification_makes_the_operators_decision_an_error_that_denies(slow: Slow) -> None:
    verifier = operator_verifier(OperatorSettings(verification_timeout_seconds=0.2), inner=slow)
    decision = decide(request(spec()), policies(policy()), evidence(bundle("release")), verifier)
    assert not decision.allowed
    # every blocking result an error: handlers.py keeps the model server as it is and retries, never degrades it
    assert [r.outcome for r in decision.results if r.blocking] == ["error"]
    assert "signature verification timed out after 0.2s" in decision.message


class Counting:
    def __init__(self) -> None:
        self.inner = OmsVerifier()
        self.calls = 0

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        self.calls += 1
        return self.inner.verify_model(bundle, authority)

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        self.calls += 1
        return self.inner.verify_blob(artifact, bundle, authority)


def test_the_operators_verifier_verifies_real_bundles_within_the_deadline_and_caches_them(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    signed_bundle = sign_with_key(make_model(tmp_path / "fraud"), key, tmp_path / "model.sig")
    counting = Counting()
    verifier = operator_verifier(OperatorSettings(), inner=counting)
    authority = Authority(name="release", kind="key", public_key=key.public_pem)
    assert verifier.verify_model(signed_bundle, authority).model_name == "fraud"
    assert verifier.verify_model(signed_bundle, authority).model_name == "fraud"
    assert counting.calls == 1


def test_the_deadline_defaults_to_the_webhooks_and_is_set_by_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    default = OperatorSettings.model_fields["verification_timeout_seconds"].default
    assert default == WebhookSettings.model_fields["verification_timeout_seconds"].default == 3.0
    seen: list[OperatorSettings] = []
    monkeypatch.setattr("devmlops.operator.main.run", seen.append)
    result = CliRunner().invoke(cli, ["operator", "--verification-timeout", "1.5"])
    assert result.exit_code == 0, result.output
    assert seen[0].verification_timeout_seconds == 1.5
    assert CliRunner().invoke(cli, ["operator", "--verification-timeout", "0"]).exit_code != 0
