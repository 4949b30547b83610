"""Evidence: the documents a ModelDeployment refers to, resolved by the shell before ``decide()`` runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devmlops.core.childreview import DEFAULT_SERVER_IMAGES
from devmlops.core.model import Decision
from devmlops.core.sbom import SbomSummary

__all__ = ["ApprovalState", "Document", "Evidence"]


@dataclass(frozen=True, slots=True)
class Document:
    """A resolved document, or why it could not be resolved. ``source`` says where it came from."""

    source: str
    text: str | None = None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalState:
    """The valid ModelApproval for this ModelDeployment's digest, as the shell found it (it owns the clock)."""

    approved: bool
    approver: str = ""
    name: str = ""
    expires: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    signatures: tuple[Document, ...] = ()
    sbom: Document | None = None
    sbom_summary: SbomSummary | None = None
    sbom_error: str = ""
    sbom_signature: Document | None = None
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    approval: ApprovalState | None = None
    target: Mapping[str, Any] | None = None  # the ModelDeployment a ModelApproval names
    now: str = ""  # RFC 3339, from the shell's clock (the core has none)
    requester_stamped: bool = False  # the mutating webhook stamps devmlops.io/requested-by
    owner: Mapping[str, Any] | None = None  # for a model server: the ModelDeployment its controller chain leads to
    owner_decision: Decision | None = None  # that ModelDeployment decided again at the serving stage
    model_server_images: tuple[str, ...] = DEFAULT_SERVER_IMAGES
