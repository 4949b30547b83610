"""The typed objects: the CRD schemas and the parser agree, and a malformed object is an error naming the field,
what was found there and what was expected, never an exception from inside."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from devmlops.core import manifests
from devmlops.errors import InvalidInputError

CRDS = Path(__file__).resolve().parents[3] / "crds"
SPECS: dict[str, type[BaseModel]] = {
    "devmlops.io_modeldeployments.yaml": manifests.ModelDeploymentSpec,
    "devmlops.io_clustermodelpolicies.yaml": manifests.ClusterModelPolicySpec,
    "devmlops.io_modelpolicies.yaml": manifests.ModelPolicySpec,
    "devmlops.io_modelapprovals.yaml": manifests.ModelApprovalSpec,
}
DIGEST = "sha256:" + "ab" * 32
_COMPARED = ("enum", "pattern", "maxLength", "minLength", "minimum", "maximum", "minItems", "maxItems", "format")


def crd_spec(file: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / file).read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema node with ``$ref`` followed and ``X | None`` reduced to ``X``."""
    if "$ref" in node:
        node = {**defs[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        assert len(options) == 1, node
        node = {**resolve(options[0], defs), **{k: v for k, v in node.items() if k != "anyOf"}}
    if "const" in node:  # a one-word Literal
        node = {**node, "enum": [node["const"]]}
    return node


def compare(crd: dict[str, Any], typed: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    typed = resolve(typed, defs)
    problems = []
    crd_type = crd.get("type")
    typed_type = typed.get("type") or ("string" if "enum" in typed else None)
    if crd_type != typed_type:
        problems.append(f"{path}: CRD type {crd_type}, parser type {typed_type}")
    for key in _COMPARED:
        if key in crd and crd[key] != typed.get(key):
            problems.append(f"{path}: CRD {key} {crd[key]!r}, parser {typed.get(key)!r}")
    if "default" in crd and crd["default"] != typed.get("default"):
        problems.append(f"{path}: CRD default {crd['default']!r}, parser {typed.get('default')!r}")
    if crd.get("x-kubernetes-preserve-unknown-fields") and "properties" not in crd:
        return problems  # the API server keeps whatever is there: the parser is the only check, and it is stricter
    if "properties" in crd:
        crd_keys, typed_keys = set(crd["properties"]), set(typed.get("properties") or {})
        if crd_keys != typed_keys:
            problems.append(f"{path}: CRD fields {sorted(crd_keys ^ typed_keys)} differ from the parser's")
        if set(crd.get("required") or ()) != set(typed.get("required") or ()):
            problems.append(f"{path}: CRD requires {crd.get('required')}, parser {typed.get('required')}")
        for key in crd_keys & typed_keys:
            problems += compare(crd["properties"][key], typed["properties"][key], defs, f"{path}.{key}")
    if "items" in crd:
        problems += compare(crd["items"], typed.get("items") or {}, defs, f"{path}[]")
    if isinstance(crd.get("additionalProperties"), dict):
        values = typed.get("additionalProperties")
        if isinstance(values, dict):
            problems += compare(crd["additionalProperties"], values, defs, f"{path}.*")
        else:
            problems.append(f"{path}: CRD has a map of {crd['additionalProperties']}, parser {values!r}")
    return problems


@pytest.mark.parametrize("file", sorted(SPECS))
def test_the_crd_schema_and_the_parser_agree_field_by_field(file: str) -> None:
    schema = SPECS[file].model_json_schema(by_alias=True)
    problems = compare(crd_spec(file), schema, schema.get("$defs", {}), "spec")
    assert not problems, "\n".join(problems)


def test_the_walk_finds_a_disagreement() -> None:
    crd = crd_spec("devmlops.io_modeldeployments.yaml")
    crd["properties"]["model"]["properties"]["digest"]["pattern"] = "^sha512:.*$"
    crd["properties"]["runtime"]["properties"]["extra"] = {"type": "string"}
    schema = manifests.ModelDeploymentSpec.model_json_schema(by_alias=True)
    problems = compare(crd, schema, schema["$defs"], "spec")
    assert any("spec.model.digest: CRD pattern" in p for p in problems)
    assert any("spec.runtime: CRD fields ['extra']" in p for p in problems)


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml", "labels": {"devmlops.io/eu-ai-act-risk": "limited"}},
        "spec": {
            "model": {"name": "fraud", "uri": "s3://models/fraud/1", "format": "sklearn", "digest": DIGEST},
            "runtime": {"kind": "kserve", "replicas": 2},
            "signature": {"configMapKeyRef": {"name": "evidence", "key": "model.sig"}},
            "sbom": {"format": "cyclonedx", "document": {"inline": "{}"}},
        },
        "status": {"phase": "Admitted"},
    }


def test_a_valid_model_deployment_parses_into_typed_fields() -> None:
    parsed = manifests.parse_model_deployment(deployment())
    assert parsed.where == "ml/fraud"
    assert parsed.spec.model.digest == DIGEST
    assert parsed.spec.runtime.replicas == 2
    assert parsed.spec.signature is not None
    assert parsed.spec.signature.config_map_key_ref is not None
    assert parsed.spec.signature.config_map_key_ref.key == "model.sig"
    assert parsed.metadata.labels == {"devmlops.io/eu-ai-act-risk": "limited"}


def _set(path: str, value: Any) -> dict[str, Any]:
    obj = deployment()
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.model", "oops", "spec.model: found 'oops', expected an object"),
        ("spec.model.uri", 5, "spec.model.uri: found 5, expected a string"),
        ("spec.model.digest", "md5:1", "spec.model.digest: found 'md5:1', expected a string matching ^sha256:"),
        ("spec.model.uri", "ftp://x/y", "spec.model.uri: found 'ftp://x/y', expected a string matching"),
        ("spec.runtime.replicas", "2", "spec.runtime.replicas: found '2', expected an integer"),
        ("spec.runtime.replicas", True, "spec.runtime.replicas: found True, expected an integer"),
        ("spec.runtime.replicas", 5000, "spec.runtime.replicas: found 5000, expected a number of at most 1000"),
        ("spec.runtime.kind", "kservee", "spec.runtime.kind: found 'kservee', expected 'kserve' or 'triton'"),
        ("spec.runtime.kind", "triton", "spec.runtime: runtime.image is required for kind triton"),
        ("spec.runtime", _DELETE, "spec.runtime: missing, expected a value (this field is required)"),
        ("spec.signature", {}, "spec.signature: set exactly one of inline, configMapKeyRef or secretKeyRef"),
        ("spec.sigature", {}, "spec.sigature: unknown field (check its spelling)"),
        ("spec.sbom.document", {"inline": "{}", "secretKeyRef": {"name": "a", "key": "b"}}, "spec.sbom.document: set"),
        ("spec.rollout", {"strategy": "canary"}, "spec.rollout: rollout.canary is required"),
        ("metadata.labels", {"tier": 1}, "metadata.labels.tier: found 1, expected a string"),
        ("metadata", "x", "metadata: found 'x', expected an object"),
    ],
)
def test_a_malformed_model_deployment_is_an_error_naming_field_found_and_expected(
    path: str, value: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        manifests.parse_model_deployment(_set(path, value))
    assert message in caught.value.user_message
    named = "?" if path == "metadata" else "ml/fraud"  # an unreadable metadata names no object
    assert caught.value.user_message.startswith(f"ModelDeployment {named}: ")


def test_every_problem_is_named_not_only_the_first() -> None:
    obj = _set("spec.model.uri", 5)
    obj["spec"]["runtime"]["replicas"] = -1
    with pytest.raises(InvalidInputError) as caught:
        manifests.parse_model_deployment(obj)
    assert "spec.model.uri" in caught.value.user_message
    assert "spec.runtime.replicas" in caught.value.user_message
    assert len(caught.value.context["problems"]) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"modelDeployment": "fraud"}, "spec.digest: missing"),
        ({"modelDeployment": "", "digest": DIGEST}, "spec.modelDeployment: found '', expected at least 1 character"),
        ({"modelDeployment": "fraud", "digest": DIGEST, "expires": 3}, "spec.expires: found 3, expected a string"),
    ],
)
def test_a_malformed_approval_is_an_error_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        manifests.parse_model_approval({"metadata": {"name": "a", "namespace": "ml"}, "spec": spec})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
FIELDS = ["spec", "spec.model", "spec.model.name", "spec.model.uri", "spec.model.digest", "spec.runtime",
          "spec.runtime.kind", "spec.runtime.replicas", "spec.signature", "spec.sbom", "spec.sbom.document",
          "metadata", "metadata.labels", "metadata.name"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(FIELDS), json_values)
def test_the_parser_never_raises_anything_but_a_named_error(path: str, value: Any) -> None:
    obj = _set(path, copy.deepcopy(value))
    message = ""
    try:
        parsed = manifests.parse_model_deployment(obj)
    except InvalidInputError as exc:
        message = exc.user_message
    if message:
        assert message.startswith("ModelDeployment")
        assert any(part in message for part in ("spec", "metadata", "the object"))
    else:  # what parses is well formed
        assert parsed.spec.model.digest.startswith("sha256:")
        assert parsed.spec.runtime.kind in ("kserve", "triton")


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_values)
def test_policies_never_raise_anything_but_a_named_error(spec: Any) -> None:
    from devmlops.core.policy import compile_model_policy, compile_policy

    for compile_ in (compile_policy, compile_model_policy):
        message = "Policy compiled"
        try:
            compile_({"metadata": {"name": "p", "namespace": "ml"}, "spec": spec})
        except InvalidInputError as exc:
            message = exc.user_message
        assert "Policy" in message


def test_an_integral_number_written_with_a_fraction_is_that_integer() -> None:
    """Some tools write 2.0 for 2; that is the integer 2 (while "2", true and 2.5 are refused above)."""
    assert manifests.parse_model_deployment(_set("spec.runtime.replicas", 2.0)).spec.runtime.replicas == 2
    with pytest.raises(InvalidInputError, match=r"spec.runtime.replicas: found 2.5, expected an integer"):
        manifests.parse_model_deployment(_set("spec.runtime.replicas", 2.5))


class _NoDuplicates(yaml.SafeLoader):
    """YAML keeps the last of two equal keys; the API server's decoder refuses them, and either way one is lost."""


def _mapping(loader: _NoDuplicates, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [k.value for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_NoDuplicates.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


@pytest.mark.parametrize("file", sorted(p.name for p in CRDS.glob("*.yaml")))
def test_no_crd_holds_a_key_twice(file: str) -> None:
    documents = list(yaml.load_all((CRDS / file).read_text(), Loader=_NoDuplicates))
    assert documents
