from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devmlops.adapters.sbom import SbomError, detect_format, parse_sbom
from devmlops.core.sbom import MODEL_KIND

SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
CYCLONEDX_16 = Path("cyclonedx-specification/1.6")
SPDX3_AI = Path("spdx-examples/ai/example02/spdx3.0/sbom.spdx3.json")


def _cyclonedx(version: str, component_type: str = "machine-learning-model") -> dict[str, Any]:
    return {
        "bomFormat": "CycloneDX",
        "specVersion": version,
        "version": 1,
        "components": [
            {
                "type": component_type,
                "bom-ref": "model-1",
                "name": "sentiment",
                "version": "2.0",
                "hashes": [{"alg": "SHA-256", "content": SHA256.upper()}],
                "licenses": [{"license": {"id": "Apache-2.0"}}, {"license": {"name": "Acme Model License"}}],
                "components": [{"type": "file", "name": "weights.bin"}],
            }
        ],
    }


def _spdx2() -> dict[str, Any]:
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "model-sbom",
        "documentNamespace": "https://example.com/spdx/model-sbom-1",
        "creationInfo": {"created": "2024-06-24T05:30:00Z", "creators": ["Tool: devmlops-tests"]},
        "packages": [
            {
                "SPDXID": "SPDXRef-Package-model",
                "name": "sentiment-model",
                "versionInfo": "2.0",
                "downloadLocation": "NOASSERTION",
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "Apache-2.0",
                "checksums": [{"algorithm": "SHA256", "checksumValue": SHA256}],
            }
        ],
        "files": [
            {
                "SPDXID": "SPDXRef-File-weights",
                "fileName": "./model/weights.bin",
                "checksums": [{"algorithm": "SHA1", "checksumValue": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"}],
                "licenseConcluded": "NONE",
            }
        ],
    }


def _spdx3(*, with_creation_info: bool = True) -> dict[str, Any]:
    graph: list[dict[str, Any]] = [
        {
            "type": "ai_AIPackage",
            "spdxId": "https://example.com/AIPackage1",
            "creationInfo": "_:ci",
            "name": "sentiment",
            "software_packageVersion": "2.0",
            "ai_domain": ["nlp"],
            "ai_limitation": "",
            "ai_safetyRiskAssessment": "low",
            "verifiedUsing": [{"type": "Hash", "algorithm": "sha256", "hashValue": SHA256}],
        },
        {
            "type": "Relationship",
            "spdxId": "https://example.com/Relationship1",
            "creationInfo": "_:ci",
            "from": "https://example.com/AIPackage1",
            "relationshipType": "hasConcludedLicense",
            "to": ["https://spdx.org/licenses/MIT"],
        },
    ]
    if with_creation_info:
        graph.insert(
            0, {"@id": "_:ci", "type": "CreationInfo", "specVersion": "3.0.1", "created": "2024-06-24T05:30:00Z"}
        )
    return {"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": graph}


def _raises(document: dict[str, Any] | str, match: str) -> SbomError:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(SbomError, match=match) as caught:
        parse_sbom(text)
    return caught.value


# --- real documents -----------------------------------------------------------------------------------------------


def test_the_cyclonedx_machine_learning_example_yields_its_model_and_model_card(shared_fixtures: Path) -> None:
    summary = parse_sbom((shared_fixtures / CYCLONEDX_16 / "valid-machine-learning-1.6.json").read_bytes())
    assert (summary.format, summary.spec_version) == ("cyclonedx", "1.6")
    (model,) = summary.models
    assert (model.name, model.version, model.ref, model.kind) == ("stable-diffusion", "1.4", "component-a", MODEL_KIND)
    assert model.hashes == ()
    assert {
        "modelParameters",
        "modelParameters.task",
        "modelParameters.datasets",
        "modelParameters.approach",
        "quantitativeAnalysis.performanceMetrics",
        "considerations",
        "considerations.ethicalConsiderations",
        "considerations.fairnessAssessments",
        "properties",
    } <= model.model_card_fields
    assert "modelParameters.approach.type" not in model.model_card_fields


def test_the_cyclonedx_data_component_example_is_valid_and_no_model(shared_fixtures: Path) -> None:
    summary = parse_sbom((shared_fixtures / CYCLONEDX_16 / "valid-component-data-1.6.json").read_text())
    assert [(c.name, c.kind, c.version) for c in summary.components] == [("my-configs", "data", "1337")]
    assert summary.models == ()


def test_the_cyclonedx_invalid_hash_example_is_rejected_naming_the_hash_field(shared_fixtures: Path) -> None:
    with pytest.raises(SbomError) as caught:
        parse_sbom((shared_fixtures / CYCLONEDX_16 / "invalid-hash-sha256-1.6.json").read_bytes())
    assert "components[0].hashes[2].content" in caught.value.user_message
    assert "'foo'" in caught.value.user_message
    assert caught.value.context["path"] == "components[0].hashes[2].content"


def test_the_spdx3_ai_example_yields_the_ai_package_its_license_and_the_model_file(shared_fixtures: Path) -> None:
    summary = parse_sbom((shared_fixtures / SPDX3_AI).read_bytes(), declared_format="spdx")
    assert (summary.format, summary.spec_version) == ("spdx", "3.0.1")
    models = {component.name: component for component in summary.models}
    assert set(models) == {"Sentiment Demo: A Simple AI Application and its AI BOM Example", "model.bin"}
    package, model_file = models["Sentiment Demo: A Simple AI Application and its AI BOM Example"], models["model.bin"]
    assert package.licenses == ("CC0-1.0",)
    assert {"domain", "typeOfModel", "hyperparameter", "metric", "autonomyType"} <= package.model_card_fields
    assert package.risk is None
    assert model_file.name == "model.bin"
    assert model_file.ref.endswith("File10-f10f9f75-3a23-465e-a80d-3a4fec75b220")
    kinds = {c.name: c.kind for c in summary.components}
    assert kinds["Data after preprocessing"] == "data"
    assert kinds["train.py"] == "file"
    assert len(summary.components) == 17


# --- CycloneDX ----------------------------------------------------------------------------------------------------


def test_a_cyclonedx_15_model_with_a_sha256_hash_and_nested_parts_is_read() -> None:
    summary = parse_sbom(json.dumps(_cyclonedx("1.5")), declared_format="cyclonedx")
    model, weights = summary.components
    assert (model.kind, model.name, model.version, model.ref) == (MODEL_KIND, "sentiment", "2.0", "model-1")
    assert model.digest("sha256") == (SHA256,)
    assert model.licenses == ("Apache-2.0", "Acme Model License")
    assert (weights.name, weights.kind) == ("weights.bin", "file")
    assert summary.spec_version == "1.5"


def test_a_cyclonedx_14_library_with_a_sha256_hash_is_read() -> None:
    document = _cyclonedx("1.4", component_type="library")
    document["components"][0]["licenses"] = [{"expression": "MIT OR CC0-1.0"}]
    summary = parse_sbom(json.dumps(document).encode())
    (library, _weights) = summary.components
    assert (library.kind, library.hashes, library.licenses) == ("library", (("sha256", SHA256),), ("MIT OR CC0-1.0",))
    assert summary.models == ()


def test_cyclonedx_14_has_no_machine_learning_model_type_so_such_a_document_is_rejected() -> None:
    error = _raises(_cyclonedx("1.4"), r"CycloneDX 1\.4 SBOM is invalid at components\[0\]\.type")
    assert "machine-learning-model" in error.user_message


def test_the_metadata_component_is_a_component_too() -> None:
    document = _cyclonedx("1.6")
    document["metadata"] = {"component": {"type": "application", "name": "app", "bom-ref": "app"}}
    assert [c.name for c in parse_sbom(json.dumps(document)).components] == ["app", "sentiment", "weights.bin"]


def test_a_sha256_of_the_wrong_length_is_rejected_although_the_schema_allows_it() -> None:
    document = _cyclonedx("1.6")
    document["components"][0]["hashes"][0]["content"] = SHA256[:40]
    _raises(document, r"at components\[0\]\.hashes\[0\]\.content: SHA-256 digest .* is not 64 hex digits")


@pytest.mark.parametrize("version", ["1.2", "1.3", "2.0", 1.6])
def test_an_unsupported_cyclonedx_spec_version_is_named_with_the_supported_ones(version: object) -> None:
    document = _cyclonedx("1.6")
    document["specVersion"] = version
    _raises(document, r"CycloneDX specVersion .* is not supported; expected one of 1\.4, 1\.5, 1\.6")


def test_an_unknown_property_fails_the_strict_cyclonedx_schema() -> None:
    document = _cyclonedx("1.6")
    document["components"][0]["colour"] = "blue"
    _raises(document, r"invalid at components\[0\]: Additional properties are not allowed \('colour'")


# --- JSON and format ----------------------------------------------------------------------------------------------


def test_invalid_json_is_rejected_with_its_line_and_column() -> None:
    _raises('{\n  "bomFormat": "CycloneDX",\n  "specVersion": }', r"SBOM is not valid JSON: .* at line 3 column 18")


def test_duplicate_keys_and_non_objects_are_rejected() -> None:
    _raises('{"bomFormat": "CycloneDX", "bomFormat": "CycloneDX"}', "duplicate key 'bomFormat'")
    _raises("[1, 2]", "SBOM must be a JSON object, got an array")
    _raises('{"a": NaN}', "NaN is not a JSON value")


def test_a_declared_format_that_differs_from_the_document_is_a_mismatch() -> None:
    with pytest.raises(SbomError, match="SBOM format mismatch: got 'cyclonedx', expected 'spdx'"):
        parse_sbom(json.dumps(_cyclonedx("1.6")), declared_format="spdx")


def test_a_document_of_neither_format_is_not_recognised() -> None:
    error = _raises({"bomFormat": "Syft", "artifacts": []}, "SBOM format not recognised")
    assert "artifacts, bomFormat" in error.user_message
    with pytest.raises(SbomError, match="not recognised"):
        detect_format({"@context": "https://schema.org", "@graph": []})


def test_the_format_is_detected_from_the_documents_own_markers() -> None:
    assert detect_format(_cyclonedx("1.6")) == "cyclonedx"
    assert detect_format(_spdx2()) == "spdx"
    assert detect_format(_spdx3()) == "spdx"


# --- SPDX 2 -------------------------------------------------------------------------------------------------------


def test_an_spdx23_document_yields_packages_with_checksums_and_files_without_dot_slash() -> None:
    summary = parse_sbom(json.dumps(_spdx2()))
    assert (summary.format, summary.spec_version) == ("spdx", "2.3")
    package, file_ = summary.components
    assert (package.name, package.kind, package.version, package.ref) == (
        "sentiment-model",
        "package",
        "2.0",
        "SPDXRef-Package-model",
    )
    assert package.hashes == (("sha256", SHA256),)
    assert package.licenses == ("Apache-2.0",)
    assert (file_.name, file_.kind, file_.licenses) == ("model/weights.bin", "file", ())
    assert file_.digest("sha1") == ("a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",)
    assert summary.models == ()


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d.pop("documentNamespace"), "documentNamespace"),
        (lambda d: d["creationInfo"].pop("created"), "creationInfo.created"),
        (lambda d: d["creationInfo"].update(creators=[]), "creationInfo.creators"),
        (lambda d: d["packages"][0].pop("name"), r"packages\[0\]\.name"),
        (lambda d: d["files"][0].pop("SPDXID"), r"files\[0\]\.SPDXID"),
        (lambda d: d["packages"][0]["checksums"][0].pop("algorithm"), r"packages\[0\]\.checksums\[0\]\.algorithm"),
        (lambda d: d["files"][0]["checksums"][0].update(checksumValue="zz"), r"files\[0\]\.checksums\[0\]"),
        (lambda d: d.update(packages={}), "packages: got an object, expected an array"),
    ],
)
def test_an_spdx23_document_with_a_broken_required_field_names_it(edit: Any, path: str) -> None:
    document = copy.deepcopy(_spdx2())
    edit(document)
    _raises(document, rf"SPDX-2\.3 document is invalid at {path}")


def test_an_unsupported_spdx_version_is_named() -> None:
    document = _spdx2()
    document["spdxVersion"] = "SPDX-2.1"
    _raises(document, r'spdxVersion "SPDX-2\.1" is not supported; expected one of SPDX-2\.2, SPDX-2\.3')


# --- SPDX 3 -------------------------------------------------------------------------------------------------------


def test_an_spdx3_ai_package_yields_hash_license_model_card_and_risk() -> None:
    (model,) = parse_sbom(json.dumps(_spdx3())).components
    assert (model.kind, model.name, model.version) == (MODEL_KIND, "sentiment", "2.0")
    assert model.hashes == (("sha256", SHA256),)
    assert model.licenses == ("MIT",)
    assert model.model_card_fields == {"domain", "safetyRiskAssessment"}
    assert model.risk == "low"


def test_an_spdx3_document_without_creation_info_is_rejected() -> None:
    _raises(_spdx3(with_creation_info=False), "SPDX 3 document is invalid at @graph: no CreationInfo")


def test_an_spdx3_element_without_spdx_id_or_type_is_named() -> None:
    document = _spdx3()
    del document["@graph"][1]["spdxId"]
    _raises(document, r"invalid at @graph\[1\]\.spdxId: required field is missing")
    document = _spdx3()
    del document["@graph"][2]["type"]
    _raises(document, r"invalid at @graph\[2\]\.type: required field is missing")


def test_a_document_nested_too_deeply_to_validate_is_rejected_not_crashed() -> None:
    component: dict[str, Any] = {"type": "library", "name": "leaf"}
    for level in range(300):
        component = {"type": "library", "name": f"level-{level}", "components": [component]}
    _raises({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [component]}, "nested too deeply")


def _with_url(url: str) -> str:
    reference = {"type": "website", "url": url}
    component = {"type": "machine-learning-model", "name": "m", "externalReferences": [reference]}
    return json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": [component]})


@pytest.mark.parametrize("url", ["https://例え.jp/パス?q=ü#top", "models/fraud.md", "https://x.org/%C3%BC", "urn:x:y"])
def test_iri_references_in_a_cyclonedx_document_are_checked_and_unicode_ones_pass(url: str) -> None:
    assert parse_sbom(_with_url(url)).format == "cyclonedx"


@pytest.mark.parametrize("url", ["http://exa mple.com/", "https://x.org/%zz", "http://[::1/", "https://x.org/<a>"])
def test_a_malformed_iri_reference_is_rejected_naming_its_field(url: str) -> None:
    with pytest.raises(SbomError, match=r"components\[0\]\.externalReferences\[0\]\.url"):
        parse_sbom(_with_url(url))


def test_validating_a_cyclonedx_document_loads_no_grammar_compiler() -> None:
    """iri-reference is checked by adapters/iri.py, not by rfc3987-syntax (a second and 14.5 MiB per process)."""
    script = (
        "import sys; from devmlops.adapters.sbom import parse_sbom; "
        f"parse_sbom({_with_url('https://例え.jp/')!r}); "
        "print(sorted(m for m in ('rfc3987_syntax', 'lark', 'jsonschema') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert found.stdout.strip() == "['jsonschema']"
