"""``core.pinning``: which references of a ModelDeployment name a tag, how they are parsed (the OCI distribution
grammar, since the shell builds registry URLs from them), and the patch that writes the digest in their place."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devmlops.core.mutation import stamp_patch
from devmlops.core.pinning import PINNED_FROM, parse_reference, pin_patch, tag_references
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from devmlops.errors import InvalidInputError

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def deployment(uri: str, image: str | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    runtime: dict[str, Any] = {"kind": "triton", "image": image} if image else {"kind": "kserve"}
    metadata: dict[str, Any] = {"name": "fraud"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"model": {"uri": uri, "digest": DIGEST}, "runtime": runtime}}


@pytest.mark.parametrize(
    ("text", "oci", "host", "repository", "tag", "digest"),
    [
        ("oci://127.0.0.1:5000/models/fraud:1.0", True, "127.0.0.1:5000", "models/fraud", "1.0", None),
        ("oci://reg.example.com/models/fraud", True, "reg.example.com", "models/fraud", None, None),
        (f"oci://reg.example.com/m@{DIGEST}", True, "reg.example.com", "m", None, DIGEST),
        ("nvcr.io/nvidia/tritonserver:24.08-py3", False, "nvcr.io", "nvidia/tritonserver", "24.08-py3", None),
        ("tritonserver:24.08", False, "registry-1.docker.io", "library/tritonserver", "24.08", None),
        ("kserve/sklearnserver", False, "registry-1.docker.io", "kserve/sklearnserver", None, None),
        ("localhost/team/server:v1", False, "localhost", "team/server", "v1", None),
        (f"nvcr.io/nvidia/tritonserver:24.08@{DIGEST}", False, "nvcr.io", "nvidia/tritonserver", "24.08", DIGEST),
    ],
)
def test_references_are_parsed_by_the_distribution_grammar(
    text: str, oci: bool, host: str, repository: str, tag: str | None, digest: str | None
) -> None:
    found = parse_reference(text, field="f", oci_uri=oci)
    assert (found.host, found.repository, found.tag, found.digest) == (host, repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "oci"),
    [
        ("oci://reg.example.com/models/../admin:1", True),  # another path on the registry
        ("oci://reg.example.com/models/fraud:a/b", True),
        ("oci://reg.example.com/Models/fraud:1", True),  # repositories are lowercase
        ("oci://reg.example.com:1.0", True),  # no repository
        ("oci://reg.example.com/m@sha256:ABC", True),
        ("oci://reg.example.com/m:" + "x" * 129, True),
        ("oci://user@reg.example.com/m:1", True),
        ("reg.example.com/a?b=c:1", False),
        ("reg.example.com/a#frag:1", False),
        ("reg.example.com/a b:1", False),
        ("s3://bucket/model", True),
    ],
)
def test_a_reference_outside_the_grammar_is_refused_naming_the_field(text: str, oci: bool) -> None:
    with pytest.raises(InvalidInputError, match=r"^spec\.x: got "):
        parse_reference(text, field="spec.x", oci_uri=oci)


def test_only_oci_uris_and_images_without_a_digest_are_tag_references() -> None:
    assert tag_references(deployment("s3://bucket/fraud")) == {}
    assert tag_references(deployment(f"oci://r.io/m@{DIGEST}", f"r.io/triton@{DIGEST}")) == {}
    found = tag_references(deployment("oci://r.io/models/fraud:1.0", "r.io/triton"))
    assert {field: (ref.written, ref.tag) for field, ref in found.items()} == {
        "spec.model.uri": ("oci://r.io/models/fraud:1.0", "1.0"),
        "spec.runtime.image": ("r.io/triton", "latest"),  # no tag and no digest: latest, as a container runtime
    }


def test_the_patch_writes_digests_in_place_of_tags_and_records_what_was_written() -> None:
    obj = deployment("oci://r.io/models/fraud:1.0", "r.io/nvidia/triton:24.08")
    patch, annotations = pin_patch(obj, {"spec.model.uri": DIGEST, "spec.runtime.image": OTHER})
    assert patch == [
        {"op": "replace", "path": "/spec/model/uri", "value": f"oci://r.io/models/fraud@{DIGEST}"},
        {"op": "replace", "path": "/spec/runtime/image", "value": f"r.io/nvidia/triton@{OTHER}"},
    ]
    assert json.loads(annotations[PINNED_FROM]) == {
        "spec.model.uri": "oci://r.io/models/fraud:1.0",
        "spec.runtime.image": "r.io/nvidia/triton:24.08",
    }
    assert pin_patch(obj, {}) == ([], {})


@pytest.mark.parametrize("annotations", [None, {"team": "fraud"}])
def test_the_mutating_patch_carries_the_pins_beside_the_requester_stamp(annotations: dict[str, str] | None) -> None:
    """One operation writes the annotations when there were none: a second ``add /metadata/annotations`` would
    have replaced the requester's stamp."""
    obj = deployment("oci://r.io/models/fraud:1.0", annotations=annotations)
    request = AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation="CREATE",
        namespace="ns",
        name="fraud",
        username="alice",
        groups=(),
        object=obj,
        old_object=None,
    )
    patch = stamp_patch(request, pins={"spec.model.uri": DIGEST})
    applied: dict[str, Any] = {**(annotations or {})}
    for op in patch:
        if op["path"] == "/metadata/annotations":
            applied = dict(op["value"])
        elif op["path"].startswith("/metadata/annotations/"):
            applied[op["path"].rsplit("/", 1)[1].replace("~1", "/")] = op["value"]
    assert applied["devmlops.io/requested-by"] == "alice"
    assert json.loads(applied[PINNED_FROM]) == {"spec.model.uri": "oci://r.io/models/fraud:1.0"}
    assert {"op": "replace", "path": "/spec/model/uri", "value": f"oci://r.io/models/fraud@{DIGEST}"} in patch


def test_a_tag_that_names_the_digest_already_served_moves_no_requester() -> None:
    """Bob writes the tag again (kubectl replace, server-side apply) and it still names the digest Alice's version
    serves: nothing served changes, so the requester stays Alice, as the validating webhook (which sees the pinned
    object) expects. Stamping Bob here made the validating webhook refuse the update as a forged requester."""
    digest = "sha256:" + "ef" * 32
    old = deployment(f"oci://r.io/models/fraud@{digest}", annotations={"devmlops.io/requested-by": "alice"})
    new = deployment("oci://r.io/models/fraud:1.0", annotations={"devmlops.io/requested-by": "alice"})
    request = AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation="UPDATE",
        namespace="ns",
        name="fraud",
        username="bob",
        groups=(),
        object=new,
        old_object=old,
    )
    patch = stamp_patch(request, pins={"spec.model.uri": digest})
    assert not [op for op in patch if op["path"].endswith("requested-by")], patch
    moved = stamp_patch(request, pins={"spec.model.uri": DIGEST})  # the tag now names other bytes: Bob asked
    assert {"op": "add", "path": "/metadata/annotations/devmlops.io~1requested-by", "value": "bob"} in moved
