"""/validate's fast path: a decision made on the event loop when nothing in it waits, the pool otherwise, with the
same answers, the same fail-closed denials and the same bound on pending reviews as before."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devmlops.adapters.verifycache import CachingVerifier
from devmlops.core.model import Decision, GateResult
from devmlops.core.policy import Authority, PolicySet
from devmlops.core.ports import RegoVerdict, SignedModel, VerificationFailed
from devmlops.core.review import AdmissionRequest, build_response
from devmlops.errors import EvidenceUnavailableError
from devmlops.webhook import WebhookDeps, WebhookSettings, create_app
from devmlops.webhook.inline import (
    INLINE_VERIFY_MAX_BYTES,
    InlineGuardEngine,
    InlineGuardVerifier,
    WouldBlock,
    deciding_inline,
    inline_only,
)
from devmlops.webhook.service import AdmissionService
from tests.unit.core.fakes import FakeVerifier
from tests.unit.webhook.test_app import POLICY, SIGNED, UNSIGNED, Lookup, review


def settings(**values: Any) -> WebhookSettings:
    return WebhookSettings(tls_cert=Path("unused.crt"), tls_key=Path("unused.key"), **values)


def client(decide: Any, **values: Any) -> TestClient:
    deps = WebhookDeps(decide=decide, audit=lambda _record: None, inline_decisions=True)
    return TestClient(create_app(settings(**values), deps))


class Recorder:
    """A decide() that notes the thread of every call and whether it ran inline."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, request: AdmissionRequest) -> Decision:
        self.calls.append((threading.current_thread().name, inline_only()))
        decision: Decision = self.inner(request)
        return decision


def service(verifier: Any) -> AdmissionService:
    return AdmissionService(policies=lambda: PolicySet((POLICY,)), lookup=Lookup(), verifier=verifier)


def test_a_warm_decision_is_made_on_the_event_loop_and_admits() -> None:
    verifier = CachingVerifier(InlineGuardVerifier(FakeVerifier()))
    decide = Recorder(service(verifier).decide)
    with client(decide) as http:
        first = http.post("/validate", json=review(SIGNED)).json()["response"]  # the miss goes to the pool
        second = http.post("/validate", json=review(SIGNED)).json()["response"]
    assert first["allowed"] is True
    assert second["allowed"] is True
    assert [inline for _thread, inline in decide.calls] == [True, False, True]
    assert [thread.startswith("decide") for thread, _inline in decide.calls] == [False, True, False]
    assert first == second | {"uid": first["uid"]}


def test_a_verification_missing_from_the_cache_is_never_cached_inline_and_runs_once_in_the_pool() -> None:
    inner = FakeVerifier()
    verifier = CachingVerifier(InlineGuardVerifier(inner))
    with client(service(verifier).decide) as http:
        for _ in range(3):
            assert http.post("/validate", json=review(SIGNED)).json()["response"]["allowed"] is True
    assert inner.calls == 1


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (RuntimeError("boom"), "internal error in the webhook (fail closed)"),
        (EvidenceUnavailableError("the evidence cache is not synced yet"), "the evidence cache is not synced yet"),
    ],
)
def test_an_inline_decision_that_raises_fails_closed_as_a_pooled_one_does(error: Exception, message: str) -> None:
    def broken(_request: AdmissionRequest) -> Decision:
        assert inline_only()
        raise error

    answer = client(broken).post("/validate", json=review(SIGNED)).json()["response"]
    assert answer["allowed"] is False
    assert message in answer["status"]["message"]
    assert "boom" not in answer["status"]["message"]


class Threads(FakeVerifier):
    """A verifier that notes the thread of every model verification."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        self.threads.append(threading.current_thread().name)
        return super().verify_model(bundle, authority)


def test_a_small_key_bundle_missing_from_the_cache_is_verified_on_the_event_loop_once() -> None:
    """A cold review is decided without a thread hop: the miss is verified inline, cached, counted once."""
    direct, pooled, events = Threads(), Threads(), list[str]()
    verifier = CachingVerifier(InlineGuardVerifier(pooled, direct=direct), on_event=events.append)
    decide = Recorder(service(verifier).decide)
    with client(decide) as http:
        answers = [http.post("/validate", json=review(SIGNED)).json()["response"] for _ in range(3)]
    assert [answer["allowed"] for answer in answers] == [True, True, True]
    assert [inline for _thread, inline in decide.calls] == [True, True, True]
    assert (direct.calls, pooled.calls) == (1, 0)
    assert not direct.threads[0].startswith(("decide", "verify"))
    assert events == ["miss", "hit", "hit"]


class Rejecting(FakeVerifier):
    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        self.calls += 1
        raise VerificationFailed("the signature does not verify")


def test_a_failing_verification_made_inline_denies_and_is_remembered_as_a_failure() -> None:
    direct, events = Rejecting(), list[str]()
    verifier = CachingVerifier(InlineGuardVerifier(Threads(), direct=direct), on_event=events.append)
    decide = Recorder(service(verifier).decide)
    with client(decide) as http:
        answers = [http.post("/validate", json=review(SIGNED)).json()["response"] for _ in range(2)]
    assert [answer["allowed"] for answer in answers] == [False, False]
    assert all("the signature does not verify" in answer["status"]["message"] for answer in answers)
    assert [inline for _thread, inline in decide.calls] == [True, True]
    assert direct.calls == 1
    assert events == ["miss", "negative_hit"]


@pytest.mark.parametrize(
    ("kind", "size", "inline"),
    [
        ("key", 1_000, True),
        ("certificateChain", INLINE_VERIFY_MAX_BYTES, True),
        ("key", INLINE_VERIFY_MAX_BYTES + 1, False),
        ("keyless", 1_000, False),  # its trust root may be read or fetched: never on the event loop
    ],
)
def test_only_small_bundles_of_keys_and_certificate_chains_are_verified_inline(
    kind: str, size: int, inline: bool
) -> None:
    from tests.unit.core.fakes import bundle

    authority = Authority(name="release", kind=kind, public_key="-----BEGIN PUBLIC KEY-----")  # type: ignore[arg-type]
    claim = bundle("release")
    padded = claim[:-1] + ', "pad": "' + "x" * (size - len(claim) - 11) + '"}'
    assert len(padded) == size
    direct, pooled = Threads(), Threads()
    verifier = InlineGuardVerifier(pooled, direct=direct)
    with deciding_inline():
        if inline:
            assert verifier.verify_model(padded, authority).signer == "release"
        else:
            with pytest.raises(WouldBlock, match="signature verification"):
                verifier.verify_model(padded, authority)
    assert (direct.calls, pooled.calls) == (int(inline), 0)
    assert verifier.verify_model(padded, authority).signer == "release"  # outside an inline decision: the pool
    assert (direct.calls, pooled.calls) == (int(inline), 1)


def test_an_sboms_artifact_counts_towards_the_inline_bound() -> None:
    from tests.unit.core.fakes import bundle

    authority = Authority(name="release", kind="key", public_key="-----BEGIN PUBLIC KEY-----")
    verifier = InlineGuardVerifier(FakeVerifier(), direct=FakeVerifier())
    small, large = b"x" * 100, b"x" * INLINE_VERIFY_MAX_BYTES
    with deciding_inline():
        signed = json.dumps({"authority": "release", "sha": len(small)})
        assert verifier.verify_blob(small, signed, authority) == "release"
        with pytest.raises(WouldBlock, match="SBOM signature verification"):
            verifier.verify_blob(large, json.dumps({"authority": "release", "sha": len(large)}), authority)
        with pytest.raises(WouldBlock, match="attestation verification"):
            verifier.verify_attestation(bundle("release") + " " * INLINE_VERIFY_MAX_BYTES, authority)


def test_a_decision_that_would_wait_is_decided_in_the_pool_under_the_deadline() -> None:
    def slow(_request: AdmissionRequest) -> Decision:
        if inline_only():
            raise WouldBlock("OPA query")
        time.sleep(1.0)
        return Decision((GateResult(gate="rego", outcome="pass", reason="late"),))

    answer = client(slow, decision_timeout_seconds=0.2).post("/validate", json=review(SIGNED)).json()["response"]
    assert answer["allowed"] is False
    assert "no decision within 0.2s (fail closed)" in answer["status"]["message"]


def test_the_malformed_and_oversized_stay_denied_with_the_fast_path_on() -> None:
    http = client(service(FakeVerifier()).decide, max_body_bytes=4096)
    huge = http.post("/validate", content=json.dumps(review({"spec": {"signature": {"inline": "x" * 10_000}}})))
    assert (huge.status_code, huge.json()["response"]["allowed"]) == (413, False)
    broken = http.post("/validate", content=b"{not json")
    assert (broken.status_code, broken.json()["response"]["allowed"]) == (400, False)
    with pytest.raises(ValueError, match="Expecting property name") as raised:
        json.loads(b"{not json")
    assert broken.json()["response"]["status"]["message"].endswith(str(raised.value))
    body = review(SIGNED)
    body["request"]["operation"] = "MERGE"
    answer = http.post("/validate", json=body).json()["response"]
    assert (answer["uid"], answer["allowed"]) == ("req-1", False)
    unsigned = http.post("/validate", json=review(UNSIGNED)).json()["response"]
    assert unsigned["allowed"] is False
    assert "spec.signature is missing" in unsigned["status"]["message"]


def test_bodies_the_fast_parser_refuses_are_read_as_before() -> None:
    """orjson refuses integers past 64 bits and NaN; the standard parser takes them, as it always did."""
    http = client(service(FakeVerifier()).decide)
    big = review(SIGNED)
    big["request"]["object"]["spec"]["runtime"]["replicas"] = 2**70
    answer = http.post("/validate", content=json.dumps(big)).json()["response"]
    assert answer["uid"] == "req-1"
    nan = json.dumps(review(SIGNED)).replace('"kind": "kserve"', '"kind": "kserve", "x": NaN')
    assert http.post("/validate", content=nan).json()["response"]["uid"] == "req-1"
    lone = json.dumps(review(SIGNED)).replace('"uid": "req-1"', '"uid": "req-\\ud800"')
    response = http.post("/validate", content=lone)
    assert response.status_code == 200
    assert response.json()["response"]["uid"] == "req-\ud800"


@pytest.mark.parametrize(
    "decision",
    [
        Decision((GateResult(gate="signature", outcome="pass", reason='verified "x" \u00e9', policy="p"),)),
        Decision(
            (
                GateResult(gate="signature", outcome="fail", reason="no signature", hint="sign it", policy="p"),
                GateResult(gate="sbom", outcome="fail", reason="warned", policy="w", mode="warn"),
                GateResult(gate="allowlist", outcome="pass", reason='uid":"" inside a reason', policy="p"),
            )
        ),
    ],
)
def test_the_answer_is_exactly_what_build_response_makes(decision: Decision) -> None:
    http = client(lambda _request: decision)
    for uid in ("req-1", 'a "quoted" uid', "ünïcode"):
        body = review(SIGNED)
        body["request"]["uid"] = uid
        assert http.post("/validate", json=body).json() == json.loads(json.dumps(build_response(decision, uid)))


def test_reviews_arriving_together_past_the_pending_limit_are_shed_when_decided_inline() -> None:
    app = create_app(
        settings(max_pending_decisions=2),
        WebhookDeps(
            decide=lambda _r: Decision((GateResult(gate="t", outcome="pass", reason="ok"),)),
            audit=lambda _record: None,
            inline_decisions=True,
        ),
    )
    raw = json.dumps(review(SIGNED)).encode()

    async def call() -> dict[str, Any]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/validate", "headers": []}
        await app(scope, receive, send)
        answer: dict[str, Any] = json.loads(sent[1]["body"])["response"]
        return answer

    async def together() -> list[dict[str, Any]]:
        return list(await asyncio.gather(call(), call(), call()))

    answers = asyncio.run(together())
    assert [a["allowed"] for a in answers] == [True, True, False]
    assert "webhook overloaded: 2 decisions already pending (fail closed)" in answers[2]["status"]["message"]


def test_get_on_validate_is_no_review_and_no_server_error() -> None:
    assert client(service(FakeVerifier()).decide).get("/validate").status_code in (404, 405)


def test_the_guards_refuse_only_while_deciding_inline() -> None:
    class Engine:
        def evaluate(self, package: str, document: Any) -> RegoVerdict:
            return RegoVerdict()

    authority = Authority(name="release", kind="key", public_key="-----BEGIN PUBLIC KEY-----")
    verifier, engine = InlineGuardVerifier(FakeVerifier()), InlineGuardEngine(Engine())
    from tests.unit.core.fakes import bundle

    assert isinstance(verifier.verify_model(bundle("release"), authority), SignedModel)
    assert engine.evaluate("p", {}) == RegoVerdict()
    with deciding_inline():
        with pytest.raises(WouldBlock):
            verifier.verify_model(bundle("release"), authority)
        with pytest.raises(WouldBlock):
            verifier.verify_blob(b"x", "{}", authority)
        with pytest.raises(WouldBlock):
            engine.evaluate("p", {})
    assert not inline_only()


def test_a_kubernetes_api_call_from_an_inline_decision_would_block() -> None:
    from devmlops.webhook.main import _GuardedApiClient

    api = _GuardedApiClient()
    try:
        with deciding_inline(), pytest.raises(WouldBlock):
            api.call_api("/api/v1/namespaces/x/pods/y", "GET")
    finally:
        api.close()
