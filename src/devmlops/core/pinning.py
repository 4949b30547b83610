"""Tags pinned to digests: the references in a ModelDeployment that name a tag (``spec.model.uri`` for an OCI
artifact, ``spec.runtime.image``), and the JSONPatch that replaces each with the digest the registry gave for it.

A tag can be pushed again at any time, so only a digest says what is served. Users write tags because digests are
unreadable; the mutating webhook asks the registry once, at admission, and writes the digest in the object (the tag
it came from goes to the annotation ``devmlops.io/pinned-from``, for people: nothing decides by it). Everything after
that (the validating webhook, the operator, the storage initializer, the kubelet) sees the digest only, so a tag
pushed again later changes nothing that runs. Pure: the shell asks the registry.

References are parsed by the OCI distribution grammar and anything else is refused here, because the shell builds
registry URLs from them: a repository with ``..`` or a tag with ``/`` would ask the registry for another path.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devmlops.errors import InvalidInputError

__all__ = ["PINNED_FROM", "Reference", "parse_reference", "pin_patch", "pinned_object", "tag_references"]

PINNED_FROM = "devmlops.io/pinned-from"  # {field: the reference as written}, JSON; for people, decides nothing
DOCKER_HUB = "registry-1.docker.io"

# The distribution grammar (github.com/distribution/reference): lowercase path components joined by separators.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference: ``written`` as the user wrote it, the registry ``host`` (Docker Hub's for short image
    names), the ``repository`` there, and its ``tag`` or ``digest`` (a digest wins when both are written)."""

    written: str
    name: str  # the reference without tag and digest, as written (oci:// kept): what the pinned form starts with
    host: str
    repository: str
    tag: str | None
    digest: str | None

    def pinned(self, digest: str) -> str:
        """The reference naming ``digest`` instead of the tag (``name@sha256:...``)."""
        return f"{self.name}@{digest}"


def parse_reference(text: str, *, field: str, oci_uri: bool = False) -> Reference:
    """Parse an image reference, or with ``oci_uri`` an ``oci://host/repository[:tag|@digest]`` model URI.
    ``InvalidInputError`` naming ``field`` for anything outside the grammar."""
    expected = "oci://host/repository[:tag|@sha256:digest]" if oci_uri else "[host/]repository[:tag|@sha256:digest]"
    body = text.removeprefix("oci://") if oci_uri else text
    if oci_uri and not text.startswith("oci://"):
        raise InvalidInputError(f"{field}: got '{text}', expected {expected}")
    name, at, digest = body.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise InvalidInputError(f"{field}: got '{text}', expected a sha256 digest after '@' (sha256:<64 hex>)")
    head, slash, last = name.rpartition("/")
    last, colon, tag = last.partition(":")
    path = f"{head}{slash}{last}"
    first, _, rest = path.partition("/")
    if oci_uri or (rest and ("." in first or ":" in first or first == "localhost")):
        host, repository = first, rest
    else:
        host, repository = DOCKER_HUB, path if rest else f"library/{path}"
    if (
        not _HOST.fullmatch(host)
        or not _REPOSITORY.fullmatch(repository)
        or (colon and not _TAG.fullmatch(tag))
        or len(repository) > 255
    ):
        raise InvalidInputError(f"{field}: got '{text}', expected {expected} (OCI distribution names)")
    prefix = "oci://" if oci_uri else ""
    return Reference(text, prefix + path, host, repository, tag if colon else None, digest if at else None)


def tag_references(obj: Mapping[str, Any]) -> dict[str, Reference]:
    """The references of a ModelDeployment (as the API server sends it) that name a tag and no digest, by field;
    an OCI model URI or an image without tag and digest is the tag ``latest``, as for a container runtime.
    ``InvalidInputError`` for a reference outside the grammar."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return {}
    model, runtime = spec.get("model"), spec.get("runtime")
    candidates = {
        "spec.model.uri": (model.get("uri") if isinstance(model, Mapping) else None, True),
        "spec.runtime.image": (runtime.get("image") if isinstance(runtime, Mapping) else None, False),
    }
    found: dict[str, Reference] = {}
    for field, (value, oci_uri) in candidates.items():
        if not isinstance(value, str) or (oci_uri and not value.startswith("oci://")):
            continue
        reference = parse_reference(value, field=field, oci_uri=oci_uri)
        if reference.digest is None:
            found[field] = reference if reference.tag is not None else dataclasses.replace(reference, tag="latest")
    return found


def pin_patch(obj: Mapping[str, Any], digests: Mapping[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The JSONPatch operations writing each field's digest form (``digests``: field -> ``sha256:...``, for fields
    ``tag_references`` found), and the annotations that record what was written before (for the caller to stamp
    with its own, so that one operation writes the annotations)."""
    if not digests:
        return [], {}
    references = tag_references(obj)
    patch = [
        {"op": "replace", "path": "/" + field.replace(".", "/"), "value": references[field].pinned(digest)}
        for field, digest in sorted(digests.items())
    ]
    written = {field: references[field].written for field in sorted(digests)}
    return patch, {PINNED_FROM: json.dumps(written, sort_keys=True, separators=(",", ":"))}


def pinned_object(obj: Mapping[str, Any], digests: Mapping[str, str]) -> Mapping[str, Any]:
    """``obj`` as it will be stored once ``pin_patch`` applies (what the validating webhook will see): whatever is
    worked out from the object in the same mutation (who changed what is served) must be worked out from this."""
    if not digests:
        return obj
    references = tag_references(obj)
    spec = dict(obj["spec"])
    for field, digest in digests.items():
        _, section, key = field.split(".")
        spec[section] = {**spec[section], key: references[field].pinned(digest)}
    return {**obj, "spec": spec}
