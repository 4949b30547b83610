"""What an ML-BOM says about a model, as the sbom gate needs it (format-neutral value types).

The adapters parse CycloneDX (1.4-1.6 JSON) and SPDX (2.3 JSON, 3.0 JSON-LD) into these; the gate compares them
with the signed manifest and the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MODEL_KIND", "SbomComponent", "SbomFormat", "SbomSummary"]

SbomFormat = Literal["cyclonedx", "spdx"]
MODEL_KIND = "machine-learning-model"


@dataclass(frozen=True, slots=True, kw_only=True)
class SbomComponent:
    """One component (CycloneDX component, SPDX package or file) of the document.

    ``kind`` is ``machine-learning-model`` for CycloneDX components of that type and SPDX 3 ``ai_AIPackage``
    elements (or software elements whose primary purpose is ``model``); otherwise the format's own word
    (``library``, ``data``, ``file``, ``package``, ...).
    ``hashes`` are ``(algorithm, hex)`` pairs, algorithm lower-case without dashes (``sha256``, ``sha512``),
    hex lower-case. ``licenses`` are SPDX ids, expressions or names as written. ``model_card_fields`` are the
    model-card fields present: CycloneDX dotted paths under ``modelCard`` (``modelParameters``,
    ``modelParameters.task``, ``considerations.ethicalConsiderations``), SPDX 3 AI properties without the
    ``ai_`` prefix (``domain``, ``typeOfModel``, ``safetyRiskAssessment``). ``risk`` is SPDX 3
    ``ai_safetyRiskAssessment`` (serious, high, medium, low) when stated.
    """

    name: str
    kind: str
    version: str = ""
    ref: str = ""
    hashes: tuple[tuple[str, str], ...] = ()
    licenses: tuple[str, ...] = ()
    model_card_fields: frozenset[str] = frozenset()
    risk: str | None = None

    @property
    def is_model(self) -> bool:
        return self.kind == MODEL_KIND

    def digest(self, algorithm: str = "sha256") -> tuple[str, ...]:
        return tuple(value for alg, value in self.hashes if alg == algorithm)


@dataclass(frozen=True, slots=True, kw_only=True)
class SbomSummary:
    format: SbomFormat
    spec_version: str
    components: tuple[SbomComponent, ...]
    # The machine-learning-model components, picked once: every gate and the tier read them on every review.
    models: tuple[SbomComponent, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(c for c in self.components if c.is_model))

    @property
    def model_candidates(self) -> tuple[SbomComponent, ...]:
        """The components that may describe the model: its machine-learning-model components, or, in an SPDX document
        without any (SPDX 2 has no AI profile), every package and file. The sbom gate binds the signed model to one of
        them, and the Rego input lists the same ones as ``sbom.models``: a package the gate bound but Rego never saw
        carried a license the security team's package denies past it (gates review)."""
        return self.models if self.models or self.format != "spdx" else self.components
