package devmlops.licenses_test

import rego.v1

import data.devmlops.licenses

sbom(license) := {"models": [{"name": "fraud", "licenses": [license]}]}

test_an_allowed_license_passes if {
	count(licenses.deny) == 0 with input as {"sbom": sbom("Apache-2.0")}
}

test_a_denied_license_inside_an_expression_is_found if {
	msgs := licenses.deny with input as {"sbom": sbom("MIT OR (AGPL-3.0-only WITH Classpath-exception-2.0)")}
	count(msgs) == 1
}

test_the_denied_list_is_a_parameter if {
	count(licenses.deny) == 1 with input as {"sbom": sbom("MIT"), "parameters": {"denied_licenses": ["mit"]}}
	count(licenses.deny) == 0 with input as {"sbom": sbom("AGPL-3.0-only"), "parameters": {"denied_licenses": ["MIT"]}}
}

test_no_sbom_means_nothing_to_deny if {
	count(licenses.deny) == 0 with input as {}
}

test_a_denied_list_that_is_no_list_denies_instead_of_denying_nothing if {
	msgs := licenses.deny with input as {"sbom": sbom("AGPL-3.0-only"), "parameters": {"denied_licenses": "AGPL-3.0-only"}}
	msgs == {"parameters.denied_licenses: got AGPL-3.0-only, expected a list of license ids"}
}
