"""The guard's credential scanner: detect-secrets' precise detectors, with lines that none of their patterns match
not handed to detect-secrets at all. The screen must change no answer."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from detect_secrets.core.scan import scan_line
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.keyword import KeywordDetector
from detect_secrets.settings import get_plugins

from devmlops.adapters.secretscan import _screen, secret_scanner


def _b64url(value: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


JWT = f"{_b64url({'alg': 'HS256', 'typ': 'JWT'})}.{_b64url({'sub': 'mallory'})}.c2lnbmF0dXJlc2lnbmF0dXJl"
CREDENTIALS = {
    "AWS Access Key": "the key is AKIAIOSFODNN7EXAMPLE",
    "GitHub Token": "token ghp_" + "a1B2c3D4e5" * 3 + "F6g7H8",
    "Private Key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "JSON Web Token": f"Authorization: Bearer {JWT}",
    "Basic Auth Credentials": "fetch https://admin:hunter2@db.example.com/dump",
    "Slack Token": "xoxb-123456789012-1234567890123-abcdefghijklmnopqrstuvwx",
    "Stripe Access Key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "Twilio API Key": "SK" + "0123456789abcdef" * 2,
    "SendGrid API Key": "SG." + "a" * 22 + "." + "b" * 43,
    "Telegram Bot Token": "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq",
    "GitLab Token": "glpat-" + "x1Y2z3W4v5U6t7S8r9Q0",
}
PROSE = [
    "",
    "Which iris has sepals 5.1 cm by 3.5 cm and petals 1.4 cm by 0.2 cm?",
    "You are a botanist.\nAnswer in one sentence.\r\nThank you.",
    "eyJ is how a JWT starts, and sk_test_ is a Stripe prefix: neither is a credential alone.",
    "AKIA" + " padding" * 40,
    "a jwt-looking eyJhbGciOi.eyJzdWIi.sig that is not valid base64 JSON",
    "-----BEGIN PUBLIC KEY-----",
    "user@example.com wrote https://example.com/path?q=1",
    "x" * 5000,
]


def _unscreened(text: str) -> str:
    for line in text.splitlines() or [text]:
        for secret in scan_line(line):
            return str(secret.type)
    return ""


Scanner = Callable[[str], str]


@pytest.fixture(scope="module")
def scan() -> Scanner:
    return secret_scanner()


@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
def test_each_credential_is_found_as_detect_secrets_finds_it(scan: Scanner, kind: str) -> None:
    text = CREDENTIALS[kind]
    assert scan(text) == kind
    assert scan(text) == _unscreened(text)


@pytest.mark.parametrize("text", PROSE + [f"some prose, then {c} and more" for c in CREDENTIALS.values()])
def test_the_screen_changes_no_answer(scan: Scanner, text: str) -> None:
    assert scan(text) == _unscreened(text)


def test_the_configured_detectors_are_screened(scan: Scanner) -> None:
    screen = _screen(get_plugins())
    assert screen is not None
    assert len(screen) >= len(get_plugins())


def test_a_detector_that_may_report_what_no_pattern_matches_turns_the_screen_off() -> None:
    assert _screen([AWSKeyDetector()]) is not None
    assert _screen([AWSKeyDetector(), KeywordDetector()]) is None
    assert _screen([Base64HighEntropyString(limit=4.5)]) is None
