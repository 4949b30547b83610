"""ML-BOM documents (CycloneDX 1.4-1.6 JSON, SPDX 2.2/2.3 JSON, SPDX 3.0 JSON-LD) read into ``SbomSummary`` values.

The sbom gate must never decide on a document it only half understood, so every document is validated before
anything is extracted, and every failure names the field (``components[0].hashes[1].content``) or the JSON
position, so the person who produced the SBOM can fix it. CycloneDX is checked against the official JSON schemas
that ``cyclonedx-python-lib`` ships; SPDX is checked structurally here, because the SPDX tools would be a second,
heavy dependency for the dozen fields the gate reads. Digests of well-known algorithms are also checked for
length, since a SHA-256 that is not 64 hex digits can never match the signed manifest.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from devmlops.core.sbom import MODEL_KIND, SbomComponent, SbomFormat, SbomSummary
from devmlops.errors import InvalidInputError

if TYPE_CHECKING:
    from cyclonedx.validation.json import JsonStrictValidator

__all__ = ["CYCLONEDX_VERSIONS", "SPDX2_VERSIONS", "SbomError", "detect_format", "parse_sbom"]

CYCLONEDX_VERSIONS = ("1.4", "1.5", "1.6")
SPDX2_VERSIONS = ("SPDX-2.2", "SPDX-2.3")

_Path = tuple[str | int, ...]
_SPDX3_CONTEXT = "spdx.org/rdf/3."
_NO_LICENSE = frozenset({"NOASSERTION", "NONE"})
_LICENSE_RELATIONSHIPS = frozenset({"hasDeclaredLicense", "hasConcludedLicense"})
_SPDX3_KINDS = {
    "ai_AIPackage": MODEL_KIND,
    "dataset_DatasetPackage": "data",
    "software_Package": "package",
    "software_File": "file",
}
_HEX_DIGITS = {
    "md5": 32,
    "sha1": 40,
    "sha224": 56,
    "sha256": 64,
    "sha384": 96,
    "sha512": 128,
    "sha3256": 64,
    "sha3384": 96,
    "sha3512": 128,
}
_HEX = re.compile(r"[0-9a-f]+")
_JSON_TYPES: dict[type, str] = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


class SbomError(InvalidInputError):
    """The SBOM cannot be read or breaks its format; ``user_message`` names the field path or JSON position."""


def detect_format(document: Mapping[str, Any]) -> SbomFormat:
    """Tell the format from the document's own markers, so a mislabelled upload is caught rather than misread."""
    if document.get("bomFormat") == "CycloneDX":
        return "cyclonedx"
    if "spdxVersion" in document:
        return "spdx"
    if "@context" in document and _SPDX3_CONTEXT in json.dumps(document["@context"], default=str):
        return "spdx"
    found = ", ".join(sorted(document)[:8]) or "no keys"
    raise SbomError(
        'SBOM format not recognised: expected CycloneDX (bomFormat "CycloneDX") or SPDX (spdxVersion, or an '
        f"SPDX 3 @context with @graph); got an object with {found}"
    )


def parse_sbom(data: bytes | str, *, declared_format: SbomFormat | None = None) -> SbomSummary:
    """Validate one SBOM and summarise its components; raise ``SbomError`` rather than guess."""
    text = _decode(data)
    document = _load(text)
    found = detect_format(document)
    if declared_format is not None and found != declared_format:
        raise SbomError(
            f"SBOM format mismatch: got {found!r}, expected {declared_format!r}",
            context={"format": found, "declared_format": declared_format},
        )
    if found == "cyclonedx":
        return _cyclonedx(document, text)
    if "spdxVersion" in document:
        return _spdx2(document)
    return _spdx3(document)


# --- JSON -------------------------------------------------------------------------------------------------------


def _decode(data: bytes | str) -> str:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SbomError(f"SBOM is not valid UTF-8: bad byte at offset {exc.start}") from exc
    return data.removeprefix("\ufeff")


def _load(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SbomError(f"SBOM is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise SbomError("SBOM is not valid JSON: nested too deeply") from exc
    if not isinstance(document, dict):
        raise SbomError(f"SBOM must be a JSON object, got {_json_type(document)}")
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Reject duplicate keys: parsers disagree on which one wins, and an SBOM must mean one thing."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SbomError(f"SBOM is not valid JSON: duplicate key {key!r} in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise SbomError(f"SBOM is not valid JSON: {name} is not a JSON value")


# --- CycloneDX ----------------------------------------------------------------------------------------------------


@functools.cache
def _cyclonedx_validator(version: str) -> JsonStrictValidator:
    """One validator per version: each loads and compiles its schema on first use. Imported here, not at the top:
    cyclonedx's validation stack (jsonschema and its format grammars) costs some 20 MiB and a second of start-up,
    which a process whose policies never ask for an SBOM need not pay."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from jsonschema.validators import Draft7Validator

    from devmlops.adapters.iri import register_iri_formats

    register_iri_formats(Draft7Validator.FORMAT_CHECKER)  # the checker cyclonedx validates formats with
    return JsonStrictValidator(SchemaVersion.from_version(version))


def _cyclonedx(document: dict[str, Any], text: str) -> SbomSummary:
    version = document.get("specVersion")
    if not isinstance(version, str) or version not in CYCLONEDX_VERSIONS:
        raise SbomError(
            f"CycloneDX specVersion {json.dumps(version)} is not supported; expected one of "
            + ", ".join(CYCLONEDX_VERSIONS),
            context={"format": "cyclonedx", "path": "specVersion"},
        )
    what = f"CycloneDX {version} SBOM"
    try:
        error = _cyclonedx_validator(version).validate_str(text)
    except RecursionError as exc:
        raise SbomError(f"{what} is nested too deeply to validate") from exc
    if error is not None:
        # ``error.data`` is the jsonschema ValidationError; its absolute_path is the failing field.
        detail = error.data
        path = _render(tuple(getattr(detail, "absolute_path", ())))
        message = str(getattr(detail, "message", detail))
        if len(message) > 300:
            message = message[:297] + "..."
        raise SbomError(
            f"{what} is invalid at {path}: {message}",
            context={"path": path, "schema_path": "/".join(map(str, getattr(detail, "schema_path", ())))},
        )
    components: list[SbomComponent] = []
    metadata = document.get("metadata", {})
    if "component" in metadata:
        components.extend(_cyclonedx_tree(metadata["component"], ("metadata", "component"), what=what))
    for index, item in enumerate(document.get("components", [])):
        components.extend(_cyclonedx_tree(item, ("components", index), what=what))
    return SbomSummary(format="cyclonedx", spec_version=version, components=tuple(components))


def _cyclonedx_tree(item: dict[str, Any], path: _Path, *, what: str) -> Iterator[SbomComponent]:
    """The component and, depth first, the components nested in it (assemblies list their parts this way)."""
    yield _cyclonedx_component(item, path, what=what)
    for index, child in enumerate(item.get("components", [])):
        yield from _cyclonedx_tree(child, (*path, "components", index), what=what)


def _cyclonedx_component(item: dict[str, Any], path: _Path, *, what: str) -> SbomComponent:
    hashes = tuple(
        _digest(entry["alg"], entry["content"], (*path, "hashes", index, "content"), what=what)
        for index, entry in enumerate(item.get("hashes", []))
    )
    licenses: list[str] = []
    for choice in item.get("licenses", []):
        license_ = choice.get("license", {})
        label = choice.get("expression") or license_.get("id") or license_.get("name")
        if label:
            licenses.append(label)
    return SbomComponent(
        name=item["name"],
        kind=item["type"],
        version=item.get("version", ""),
        ref=item.get("bom-ref", ""),
        hashes=hashes,
        licenses=_unique(licenses),
        model_card_fields=_card_fields(item.get("modelCard", {})),
    )


def _card_fields(card: Mapping[str, Any]) -> frozenset[str]:
    """Dotted paths of the filled-in model-card sections, two levels deep, which is what policies ask about."""
    fields: set[str] = set()
    for key, value in card.items():
        if key == "bom-ref" or not _present(value):
            continue
        fields.add(key)
        if isinstance(value, dict):
            fields.update(f"{key}.{sub}" for sub, inner in value.items() if sub != "bom-ref" and _present(inner))
    return frozenset(fields)


# --- SPDX 2 -------------------------------------------------------------------------------------------------------


def _spdx2(document: dict[str, Any]) -> SbomSummary:
    version = document["spdxVersion"]
    if version not in SPDX2_VERSIONS:
        raise SbomError(
            f"SPDX spdxVersion {json.dumps(version)} is not supported; expected one of "
            + ", ".join(SPDX2_VERSIONS)
            + " (or SPDX 3.0 JSON-LD)",
            context={"format": "spdx", "path": "spdxVersion"},
        )
    what = f"{version} document"
    for key in ("SPDXID", "name", "dataLicense", "documentNamespace"):
        _field(document, key, (), str, what=what)
    info = _field(document, "creationInfo", (), dict, what=what)
    _field(info, "created", ("creationInfo",), str, what=what)
    creators = _field(info, "creators", ("creationInfo",), list, what=what)
    if not creators:
        raise _invalid(what, ("creationInfo", "creators"), "got an empty array, expected at least one creator")
    for index, creator in enumerate(creators):
        if not isinstance(creator, str) or not creator:
            raise _invalid(what, ("creationInfo", "creators", index), f"got {_json_type(creator)}, expected a string")
    components: list[SbomComponent] = []
    for collection, name_key, kind in (("packages", "name", "package"), ("files", "fileName", "file")):
        for index, item in enumerate(_field(document, collection, (), list, what=what, required=False)):
            here: _Path = (collection, index)
            if not isinstance(item, dict):
                raise _invalid(what, here, f"got {_json_type(item)}, expected an object")
            ref = _field(item, "SPDXID", here, str, what=what)
            name = _field(item, name_key, here, str, what=what)
            components.append(
                SbomComponent(
                    name=name.removeprefix("./"),
                    kind=kind,
                    version=_field(item, "versionInfo", here, str, what=what, required=False),
                    ref=ref,
                    hashes=_spdx2_checksums(item, here, what=what),
                    licenses=_unique(
                        label
                        for key in ("licenseConcluded", "licenseDeclared")
                        if (label := _field(item, key, here, str, what=what, required=False))
                        and label not in _NO_LICENSE
                    ),
                )
            )
    return SbomSummary(format="spdx", spec_version=version.removeprefix("SPDX-"), components=tuple(components))


def _spdx2_checksums(item: dict[str, Any], path: _Path, *, what: str) -> tuple[tuple[str, str], ...]:
    hashes: list[tuple[str, str]] = []
    for index, checksum in enumerate(_field(item, "checksums", path, list, what=what, required=False)):
        here = (*path, "checksums", index)
        if not isinstance(checksum, dict):
            raise _invalid(what, here, f"got {_json_type(checksum)}, expected an object")
        algorithm = _field(checksum, "algorithm", here, str, what=what)
        value = _field(checksum, "checksumValue", here, str, what=what)
        hashes.append(_digest(algorithm, value, (*here, "checksumValue"), what=what))
    return tuple(hashes)


# --- SPDX 3 -------------------------------------------------------------------------------------------------------


def _spdx3(document: dict[str, Any]) -> SbomSummary:
    what = "SPDX 3 document"
    graph = _field(document, "@graph", (), list, what=what)
    elements: list[dict[str, Any]] = []
    for index, element in enumerate(graph):
        here: _Path = ("@graph", index)
        if not isinstance(element, dict):
            raise _invalid(what, here, f"got {_json_type(element)}, expected an object")
        if _field(element, "type", here, str, what=what) != "CreationInfo":
            _field(element, "spdxId", here, str, what=what)
        elements.append(element)
    spec_version = _spdx3_version(elements)
    by_id = {element["spdxId"]: element for element in elements if "spdxId" in element}
    licenses: dict[str, list[str]] = {}
    for index, element in enumerate(elements):
        if element.get("relationshipType") not in _LICENSE_RELATIONSHIPS:
            continue
        here = ("@graph", index)
        source = _field(element, "from", here, str, what=what)
        targets = _field(element, "to", here, list, what=what)
        for position, target in enumerate(targets):
            if not isinstance(target, str) or not target:
                raise _invalid(what, (*here, "to", position), f"got {_json_type(target)}, expected a string")
            expression = by_id.get(target, {}).get("simplelicensing_licenseExpression")
            licenses.setdefault(source, []).append(expression or target.rstrip("/").rsplit("/", 1)[-1])
    components = [
        _spdx3_component(element, ("@graph", index), kind=kind, licenses=licenses.get(element["spdxId"], []))
        for index, element in enumerate(elements)
        if (kind := _SPDX3_KINDS.get(element["type"])) is not None
    ]
    return SbomSummary(format="spdx", spec_version=spec_version, components=tuple(components))


def _spdx3_version(elements: Sequence[dict[str, Any]]) -> str:
    """The specVersion of a CreationInfo, whether it stands in the graph or is inlined in an element."""
    for element in elements:
        for info in (element, element.get("creationInfo")):
            if isinstance(info, dict) and info.get("type") == "CreationInfo":
                version = info.get("specVersion")
                if isinstance(version, str) and version.startswith("3."):
                    return version
    raise _invalid("SPDX 3 document", ("@graph",), "no CreationInfo with a specVersion 3.x")


def _spdx3_component(element: dict[str, Any], path: _Path, *, kind: str, licenses: Sequence[str]) -> SbomComponent:
    what = "SPDX 3 document"
    if element.get("software_primaryPurpose") == "model":
        kind = MODEL_KIND
    hashes: list[tuple[str, str]] = []
    for index, method in enumerate(_field(element, "verifiedUsing", path, list, what=what, required=False)):
        here = (*path, "verifiedUsing", index)
        if not isinstance(method, dict):
            raise _invalid(what, here, f"got {_json_type(method)}, expected an object")
        if method.get("type") == "Hash":
            algorithm = _field(method, "algorithm", here, str, what=what)
            value = _field(method, "hashValue", here, str, what=what)
            hashes.append(_digest(algorithm, value, (*here, "hashValue"), what=what))
    risk = _field(element, "ai_safetyRiskAssessment", path, str, what=what, required=False)
    return SbomComponent(
        name=_field(element, "name", path, str, what=what, required=False),
        kind=kind,
        version=_field(element, "software_packageVersion", path, str, what=what, required=False),
        ref=element["spdxId"],
        hashes=tuple(hashes),
        licenses=_unique(licenses),
        model_card_fields=frozenset(
            key.removeprefix("ai_") for key, value in element.items() if key.startswith("ai_") and _present(value)
        ),
        risk=risk or None,
    )


# --- shared -------------------------------------------------------------------------------------------------------


def _field(obj: Mapping[str, Any], key: str, path: _Path, expected: type, *, what: str, required: bool = True) -> Any:
    """``obj[key]`` checked for type (and non-empty when a string); an absent optional field reads as empty."""
    here = (*path, key)
    if key not in obj:
        if required:
            raise _invalid(what, here, "required field is missing")
        return expected()
    value = obj[key]
    if not isinstance(value, expected):
        raise _invalid(what, here, f"got {_json_type(value)}, expected {_JSON_TYPES[expected]}")
    if expected is str and required and not value:
        raise _invalid(what, here, "got an empty string, expected a value")
    return value


def _digest(algorithm: str, value: str, path: _Path, *, what: str) -> tuple[str, str]:
    """``(sha256, hex)`` from any format's spelling (``SHA-256``, ``SHA256``, ``sha3_256``), length-checked."""
    name = algorithm.lower().replace("-", "").replace("_", "")
    hex_value = value.lower()
    expected = _HEX_DIGITS.get(name)
    if expected is not None and (len(hex_value) != expected or not _HEX.fullmatch(hex_value)):
        raise _invalid(what, path, f"{algorithm} digest {value[:20]!r} is not {expected} hex digits")
    return name, hex_value


def _invalid(what: str, path: _Path, problem: str) -> SbomError:
    where = _render(path)
    return SbomError(f"{what} is invalid at {where}: {problem}", context={"path": where})


def _render(path: _Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(document root)"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, str | list | dict) and not value)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
