"""Resolve the documents a ModelDeployment refers to (inline, ConfigMap or Secret key) into core ``Evidence``.

Lookups go through a ``DocumentLookup`` (watch-backed caches in the webhook, manifest files in the CLI), never
one API call per admission request.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from devmlops.adapters.ocisig import ImageSignatureChecker, OciError
from devmlops.adapters.registrycache import RegistryResolver
from devmlops.adapters.sbom import SbomError, parse_sbom
from devmlops.core.evidence import Document, Evidence, ImageSignatures, RegistryVersion
from devmlops.core.gates.registry import BUNDLE_TAG, SBOM_TAG
from devmlops.core.manifests import MlflowRef
from devmlops.core.policy import Authority
from devmlops.core.sbom import SbomSummary
from devmlops.errors import EvidenceUnavailableError

__all__ = ["EVIDENCE_LABEL", "DocumentLookup", "decode_values", "resolve_evidence", "resolve_source"]

EVIDENCE_LABEL = "devmlops.io/evidence"


class DocumentLookup(Protocol):
    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None: ...

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None: ...

    def namespace_labels(self, namespace: str) -> Mapping[str, str]: ...


def decode_values(values: Mapping[str, str] | None) -> dict[str, str]:
    """Secret ``data`` and ConfigMap ``binaryData`` values are base64; evidence documents are text."""
    return {key: base64.b64decode(value).decode("utf-8", "replace") for key, value in (values or {}).items()}


def resolve_source(source: Any, namespace: str, lookup: DocumentLookup, *, field: str) -> Document:
    """One ``inline`` / ``configMapKeyRef`` / ``secretKeyRef`` source as a ``Document`` (text or the reason why not)."""
    if not isinstance(source, Mapping):
        return Document(field, error=f"{field}: expected an object with inline, configMapKeyRef or secretKeyRef")
    if isinstance(source.get("inline"), str) and source["inline"]:
        return Document(f"{field}.inline", text=source["inline"])
    for key, kind, read in (
        ("configMapKeyRef", "ConfigMap", lookup.config_map),
        ("secretKeyRef", "Secret", lookup.secret),
    ):
        ref = source.get(key)
        if isinstance(ref, Mapping):
            name, item = str(ref.get("name") or ""), str(ref.get("key") or "")
            where = f"{kind} {namespace}/{name} key {item!r}"
            try:
                data = read(namespace, name)
            except EvidenceUnavailableError as exc:
                return Document(where, error=f"{field}.{key}: {exc.user_message}")
            if data is None:
                return Document(
                    where,
                    error=f"{field}.{key}: {kind} {namespace}/{name} not found among {kind}s labelled "
                    f"{EVIDENCE_LABEL}=true (label it so devmlops can read it)",
                )
            if item not in data:
                return Document(
                    where, error=f"{field}.{key}: {kind} {namespace}/{name} has no key {item!r} (keys: {sorted(data)})"
                )
            return Document(where, text=data[item])
    return Document(field, error=f"{field}: set one of inline, configMapKeyRef or secretKeyRef")


_PARSED: OrderedDict[tuple[str, str], tuple[SbomSummary | None, str]] = OrderedDict()
_PARSED_LOCK = threading.Lock()
_PARSED_MAX = 512


def _parsed(text: str, declared: Any) -> tuple[SbomSummary | None, str]:
    """Parse and validate an SBOM once per distinct document (schema validation is the costly part)."""
    key = (hashlib.sha256(text.encode()).hexdigest(), str(declared or ""))
    with _PARSED_LOCK:
        if key in _PARSED:
            _PARSED.move_to_end(key)
            return _PARSED[key]
    try:
        value: tuple[SbomSummary | None, str] = (parse_sbom(text, declared_format=declared), "")
    except SbomError as exc:
        value = (None, exc.user_message)
    with _PARSED_LOCK:
        _PARSED[key] = value
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return value


def _registered(spec: Mapping[str, Any], resolver: RegistryResolver | None) -> RegistryVersion | None:
    """``spec.model.registry.mlflow`` resolved, or None when it is not named (or malformed: ``decide()`` denies
    that with the field) or no resolver is configured (the registry gate denies that)."""
    registry = (spec.get("model") or {}).get("registry") if isinstance(spec.get("model"), Mapping) else None
    if resolver is None or not isinstance(registry, Mapping) or registry.get("mlflow") is None:
        return None
    try:
        ref = MlflowRef.model_validate(registry["mlflow"])
    except ValidationError:
        return None
    return resolver.resolve(ref)


def _from_registry(found: RegistryVersion | None, tag: str, field: str) -> Document | None:
    """A document stored as a tag of the resolved version; an absent tag is a Document with the reason."""
    if found is None or found.error:
        return None
    where = f"{found.describe()} tag {tag}"
    if tag not in found.tags:
        missing = f"{field} is not set and {found.describe()} has no tag {tag} (`devmlops sign --mlflow` sets it)"
        return Document(where, error=missing)
    return Document(where, text=found.tags[tag])


def _image_signatures(
    spec: Mapping[str, Any], images: ImageSignatureChecker | None, authorities: Sequence[Authority]
) -> ImageSignatures | None:
    """spec.runtime.image's signatures against ``authorities`` (the image keys of the policies), when any policy
    names some; None without a checker (the image signature gate denies that)."""
    runtime = spec.get("runtime")
    image = runtime.get("image") if isinstance(runtime, Mapping) else None
    if images is None or not authorities or not isinstance(image, str) or not image:
        return None
    return images.check(image, authorities)


def _from_oci(spec: Mapping[str, Any], images: ImageSignatureChecker | None) -> list[Document] | None:
    """The OMS bundles attached as OCI referrers to an ``oci://`` model pinned by digest (None for other URIs or
    an unpinned one, which the registry gate denies); an unreadable registry is a Document with the reason."""
    model = spec.get("model")
    uri = model.get("uri") if isinstance(model, Mapping) else None
    if not isinstance(uri, str) or not uri.startswith("oci://") or "@sha256:" not in uri:
        return None
    where = f"OCI referrers of {uri}"
    if images is None:
        return [Document(where, error=f"spec.signature is not set and no OCI registry access is configured ({uri})")]
    try:
        bundles = images.model_bundles(uri)
    except OciError as exc:
        return [Document(where, error=f"spec.signature is not set and {where} could not be read: {exc}")]
    if not bundles:
        return [Document(where, error=f"spec.signature is not set and {uri} has no OMS signature attached")]
    return [Document(f"{where} (bundle {i})", text=bundle) for i, bundle in enumerate(bundles)]


def resolve_evidence(
    obj: Mapping[str, Any],
    lookup: DocumentLookup,
    registry: RegistryResolver | None = None,
    *,
    images: ImageSignatureChecker | None = None,
    image_authorities: Sequence[Authority] = (),
    devmlops_image: str = "",
    **fields: Any,
) -> Evidence:
    """The documents ``obj`` (a ModelDeployment) names, read and parsed; ``fields`` are further Evidence fields, set
    in the same construction (a copy of this dataclass costs as much as a gate). With a ``registry``, a model named
    by ``spec.model.registry`` is resolved there, and its signature and ML-BOM are read from the version's tags
    where the spec gives none. ``devmlops_image`` (given where a policy demands it signed) is checked against the
    image authorities like the runtime image."""
    metadata, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    namespace = str(metadata.get("namespace") or "default")
    found = _registered(spec, registry)
    signatures = []
    if spec.get("signature") is not None:
        signatures.append(resolve_source(spec["signature"], namespace, lookup, field="spec.signature"))
    else:
        stored = _from_registry(found, BUNDLE_TAG, "spec.signature") or _from_oci(spec, images)
        signatures += [stored] if isinstance(stored, Document) else stored or []
    for index, extra in enumerate(spec.get("additionalSignatures") or []):
        signatures.append(resolve_source(extra, namespace, lookup, field=f"spec.additionalSignatures[{index}]"))
    sbom_spec = spec.get("sbom")
    sbom = sbom_signature = summary = None
    sbom_error = ""
    if isinstance(sbom_spec, Mapping):
        sbom = resolve_source(sbom_spec.get("document"), namespace, lookup, field="spec.sbom.document")
        if sbom_spec.get("signature") is not None:
            sbom_signature = resolve_source(sbom_spec["signature"], namespace, lookup, field="spec.sbom.signature")
        if sbom.text is not None:
            summary, sbom_error = _parsed(sbom.text, sbom_spec.get("format"))
    elif found is not None and not found.error and SBOM_TAG in found.tags:
        sbom = _from_registry(found, SBOM_TAG, "spec.sbom")
        if sbom is not None and sbom.text is not None:
            summary, sbom_error = _parsed(sbom.text, None)
    attestations = tuple(
        resolve_source(source, namespace, lookup, field=f"spec.attestations[{index}]")
        for index, source in enumerate(spec.get("attestations") or [])
    )
    return Evidence(
        registry=found,
        image_signature=_image_signatures(spec, images, image_authorities),
        devmlops_image_signature=(
            images.check(devmlops_image, image_authorities) if images and image_authorities and devmlops_image else None
        ),
        signatures=tuple(signatures),
        attestations=attestations,
        sbom=sbom,
        sbom_summary=summary,
        sbom_error=sbom_error,
        sbom_signature=sbom_signature,
        namespace_labels=dict(lookup.namespace_labels(namespace)),
        **fields,
    )
