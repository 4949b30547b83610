"""Evidence: the documents a ModelDeployment refers to, resolved by the shell before ``decide()`` runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from devmlops.core.sbom import SbomSummary

__all__ = ["Document", "Evidence"]


@dataclass(frozen=True, slots=True)
class Document:
    """A resolved document, or why it could not be resolved. ``source`` says where it came from."""

    source: str
    text: str | None = None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    signatures: tuple[Document, ...] = ()
    sbom: Document | None = None
    sbom_summary: SbomSummary | None = None
    sbom_error: str = ""
    sbom_signature: Document | None = None
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
