"""Credentials in text, found by Yelp's detect-secrets with its precise detectors only (keys and tokens of known
shapes, private keys, JWTs, basic-auth URLs): its entropy and keyword detectors flag ordinary prose, so a prompt
would be refused for being English."""

from __future__ import annotations

from collections.abc import Callable

from detect_secrets.core.scan import scan_line
from detect_secrets.settings import get_settings

__all__ = ["PLUGINS", "secret_scanner"]

PLUGINS = (
    "AWSKeyDetector",
    "ArtifactoryDetector",
    "AzureStorageKeyDetector",
    "BasicAuthDetector",
    "CloudantDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "IbmCloudIamDetector",
    "IbmCosHmacDetector",
    "JwtTokenDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PrivateKeyDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SoftlayerDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
)


def secret_scanner() -> Callable[[str], str]:
    """A scanner for ``core.guard.inspect_text``: the kind of the first credential found ('' for none). detect-secrets
    keeps its plugin choice in process-wide settings; the guard is the only user in its process."""
    settings = get_settings()
    settings.clear()
    settings.configure_plugins([{"name": name} for name in PLUGINS])

    def scan(text: str) -> str:
        for line in text.splitlines() or [text]:
            for secret in scan_line(line):
                return str(secret.type)
        return ""

    return scan
