# METADATA
# title: Denied model licenses
# description: |
#   A model whose ML-BOM names a license in parameters.denied_licenses (default: non-commercial and
#   network-copyleft licenses) is not served. License expressions are split into their ids.
package devmlops.licenses

import rego.v1

default denied := {"AGPL-3.0-only", "AGPL-3.0-or-later", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0"}

denied := {l | some l in input.parameters.denied_licenses} if input.parameters.denied_licenses

denied_upper := {upper(l) | some l in denied}

license_ids(expression) := {upper(t) |
	some t in regex.split(`[\s()]+`, expression)
	t != ""
	not upper(t) in {"AND", "OR", "WITH"}
}

deny contains msg if {
	some model in input.sbom.models
	some expression in model.licenses
	some id in license_ids(expression)
	id in denied_upper
	msg := sprintf("license %s of model component %q is denied by policy (from %q)", [id, model.name, expression])
}

# A list that is not a list (a string, a map) would deny nothing: a denial names it.
deny contains msg if {
	given := object.get(input, ["parameters", "denied_licenses"], [])
	not is_array(given)
	msg := sprintf("parameters.denied_licenses: got %v, expected a list of license ids", [given])
}
