# METADATA
# title: Model card for high-risk models
# description: |
#   A high-risk (or prohibited) model must come with a model card in its ML-BOM carrying
#   parameters.required_fields (default: intended task, ethical considerations, performance metrics).
package devmlops.model_card

import rego.v1

default required := ["modelParameters.task", "considerations.ethicalConsiderations", "quantitativeAnalysis.performanceMetrics"]

required := input.parameters.required_fields

high_risk if input.compliance.tier in {"high", "prohibited"}

deny contains msg if {
	high_risk
	count(object.get(input, ["sbom", "models"], [])) == 0
	msg := "model card: a high-risk model needs an ML-BOM with a model component and its model card"
}

deny contains msg if {
	high_risk
	some model in input.sbom.models
	some field in required
	not field in model.modelCardFields
	msg := sprintf("model card of %q: field %s is missing (required for high risk)", [model.name, field])
}

# A list that is not a list (a string, a map) would require nothing: a denial names it.
deny contains msg if {
	given := object.get(input, ["parameters", "required_fields"], [])
	not is_array(given)
	msg := sprintf("parameters.required_fields: got %v, expected a list of model-card fields", [given])
}
