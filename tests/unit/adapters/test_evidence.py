from __future__ import annotations

from collections.abc import Mapping

from devmlops.adapters.evidence import resolve_evidence, resolve_source


class Lookup:
    def __init__(self) -> None:
        self.config_maps = {("ns", "cm"): {"model.sig": "BUNDLE", "sbom.json": "{not json"}}
        self.secrets = {("ns", "sec"): {"model.sig": "SECRET-BUNDLE"}}

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.config_maps.get((namespace, name))

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get((namespace, name))

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return {"team": "a"}


def test_inline_configmap_and_secret_sources_resolve_to_their_text() -> None:
    lookup = Lookup()
    assert resolve_source({"inline": "X"}, "ns", lookup, field="f").text == "X"
    assert (
        resolve_source({"configMapKeyRef": {"name": "cm", "key": "model.sig"}}, "ns", lookup, field="f").text
        == "BUNDLE"
    )
    secret = resolve_source({"secretKeyRef": {"name": "sec", "key": "model.sig"}}, "ns", lookup, field="f")
    assert (secret.text, secret.source) == ("SECRET-BUNDLE", "Secret ns/sec key 'model.sig'")


def test_a_missing_object_or_key_says_which_and_how_to_fix_it() -> None:
    lookup = Lookup()
    missing = resolve_source({"configMapKeyRef": {"name": "nope", "key": "k"}}, "ns", lookup, field="spec.signature")
    assert missing.text is None
    assert "spec.signature.configMapKeyRef: ConfigMap ns/nope not found" in missing.error
    assert "devmlops.io/evidence=true" in missing.error
    no_key = resolve_source({"configMapKeyRef": {"name": "cm", "key": "k"}}, "ns", lookup, field="spec.signature")
    assert "has no key 'k' (keys: ['model.sig', 'sbom.json'])" in no_key.error
    assert "set one of inline" in resolve_source({}, "ns", lookup, field="f").error


def test_an_sbom_that_does_not_parse_is_evidence_with_its_error_not_an_exception() -> None:
    obj = {
        "metadata": {"namespace": "ns"},
        "spec": {
            "signature": {"configMapKeyRef": {"name": "cm", "key": "model.sig"}},
            "additionalSignatures": [{"inline": "SECOND"}],
            "sbom": {"document": {"configMapKeyRef": {"name": "cm", "key": "sbom.json"}}},
        },
    }
    evidence = resolve_evidence(obj, Lookup())
    assert [doc.text for doc in evidence.signatures] == ["BUNDLE", "SECOND"]
    assert evidence.sbom_summary is None
    assert "not valid JSON" in evidence.sbom_error
    assert evidence.namespace_labels == {"team": "a"}
