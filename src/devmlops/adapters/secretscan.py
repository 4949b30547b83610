"""Credentials in text, found by Yelp's detect-secrets with its precise detectors only (keys and tokens of known
shapes, private keys, JWTs, basic-auth URLs): its entropy and keyword detectors flag ordinary prose, so a prompt
would be refused for being English."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from detect_secrets.core.scan import scan_line
from detect_secrets.plugins.base import BasePlugin, RegexBasedDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.settings import get_plugins, get_settings

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


def _screen(plugins: Iterable[BasePlugin]) -> tuple[re.Pattern[str], ...] | None:
    """Every pattern of the detectors' denylists, when each detector reports only what one of its patterns matches
    (a regex detector that does not override how a line is read; the JWT detector keeps a subset of its matches).
    A line that none of them matches then holds nothing ``scan_line`` would report, and is not handed to it: a
    call costs a few hundred microseconds, mostly its own bookkeeping, the patterns a tenth of that. None (scan
    every line) when a detector could report something else."""
    patterns: list[re.Pattern[str]] = []
    for plugin in plugins:
        kind = type(plugin)
        if not isinstance(plugin, RegexBasedDetector) or kind.analyze_line is not BasePlugin.analyze_line:
            return None
        if kind.analyze_string is not RegexBasedDetector.analyze_string and kind is not JwtTokenDetector:
            return None
        patterns += plugin.denylist
    return tuple(patterns)


def secret_scanner() -> Callable[[str], str]:
    """A scanner for ``core.guard.inspect_text``: the kind of the first credential found ('' for none). detect-secrets
    keeps its plugin choice in process-wide settings; the guard is the only user in its process."""
    settings = get_settings()
    settings.clear()
    settings.configure_plugins([{"name": name} for name in PLUGINS])
    screen = _screen(get_plugins())

    def scan(text: str) -> str:
        for line in text.splitlines() or [text]:
            if screen is not None and not any(pattern.search(line) for pattern in screen):
                continue
            for secret in scan_line(line):
                return str(secret.type)
        return ""

    return scan
