"""The ``iri`` and ``iri-reference`` JSON Schema formats, which the CycloneDX schemas use for every URL.

jsonschema checks them only with ``rfc3987`` (GPL) or ``rfc3987-syntax`` installed; the latter compiles a grammar
at import, which costs every webhook process about a second and 14.5 MiB. RFC 3987 section 3.1 maps an IRI to a URI
by percent-encoding its non-ASCII characters as UTF-8; an IRI is well formed when that URI is, which
``rfc3986-validator`` checks against the RFC 3986 grammar. (This accepts a few code points RFC 3987 excludes from
``ucschar``, such as noncharacters: a URL field is never trusted for anything but its syntax.)
"""

from __future__ import annotations

from urllib.parse import quote

from jsonschema import FormatChecker
from rfc3986_validator import validate_rfc3986

__all__ = ["register_iri_formats"]


def _as_uri(iri: str) -> str:
    """Only non-ASCII characters are encoded: ASCII ones (a space, say) are left for the URI grammar to judge."""
    if iri.isascii():
        return iri
    return "".join(c if c.isascii() else quote(c, safe="") for c in iri)


def is_iri(value: object) -> bool:
    return not isinstance(value, str) or bool(validate_rfc3986(_as_uri(value), rule="URI"))


def is_iri_reference(value: object) -> bool:
    return not isinstance(value, str) or bool(validate_rfc3986(_as_uri(value), rule="URI_reference"))


def register_iri_formats(checker: FormatChecker) -> None:
    """Add the two formats to ``checker`` unless jsonschema already checks them (a GPL or grammar parser)."""
    if "iri" not in checker.checkers:
        checker.checks("iri")(is_iri)
    if "iri-reference" not in checker.checkers:
        checker.checks("iri-reference")(is_iri_reference)
