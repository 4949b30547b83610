"""One error hierarchy for devmlops.

Each error carries text for the person who must act on it (``user_message``) apart from the context that only
helps whoever reads the logs (``context``), so that a denial never leaks internals and a log never lacks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ConfigurationError",
    "DevmlopsError",
    "EvidenceUnavailableError",
    "HarnessError",
    "InvalidInputError",
    "MetricsUnavailableError",
    "RegistryUnavailableError",
]


class DevmlopsError(Exception):
    """Base of every error devmlops raises on purpose."""

    def __init__(self, user_message: str, *, context: Mapping[str, Any] | None = None) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.context: dict[str, Any] = dict(context or {})


class InvalidInputError(DevmlopsError):
    """An input (manifest, bundle, SBOM, policy, request) is malformed; the message names the field."""


class ConfigurationError(DevmlopsError):
    """The process was started with settings that cannot work."""


class HarnessError(DevmlopsError):
    """The local control plane could not be built, started or stopped."""


class EvidenceUnavailableError(DevmlopsError):
    """An evidence source this installation may not read (e.g. a Secret outside the configured namespaces)."""


class MetricsUnavailableError(DevmlopsError):
    """A metrics query could not be answered (Prometheus unreachable, slow, refusing the query, or answering something
    that is not one number); whoever asked treats it as a failed analysis, never as a pass."""


class RegistryUnavailableError(DevmlopsError):
    """A registry could not answer what devmlops had to ask it (the digest a tag names now): a denial naming the
    field and the registry, never a guess."""
