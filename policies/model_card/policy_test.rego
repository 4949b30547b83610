package devmlops.model_card_test

import rego.v1

import data.devmlops.model_card

complete := {"models": [{"name": "fraud", "modelCardFields": [
	"modelParameters.task",
	"considerations.ethicalConsiderations",
	"quantitativeAnalysis.performanceMetrics",
]}]}

test_a_complete_card_passes if {
	count(model_card.deny) == 0 with input as {"compliance": {"tier": "high"}, "sbom": complete}
}

test_missing_fields_are_named if {
	msgs := model_card.deny with input as {"compliance": {"tier": "high"}, "sbom": {"models": [{"name": "fraud", "modelCardFields": ["modelParameters.task"]}]}}
	count(msgs) == 2
}

test_a_high_risk_model_without_sbom_is_denied if {
	count(model_card.deny) == 1 with input as {"compliance": {"tier": "high"}}
}

test_lower_tiers_need_no_card if {
	count(model_card.deny) == 0 with input as {"compliance": {"tier": "limited"}}
}

test_required_fields_are_a_parameter if {
	doc := {"compliance": {"tier": "high"}, "parameters": {"required_fields": ["x"]}, "sbom": complete}
	count(model_card.deny) == 1 with input as doc
}

test_required_fields_that_are_no_list_deny_instead_of_requiring_nothing if {
	doc := {"compliance": {"tier": "high"}, "parameters": {"required_fields": "modelParameters.task"}, "sbom": {"models": [{"name": "fraud", "modelCardFields": []}]}}
	msgs := model_card.deny with input as doc
	msgs == {"parameters.required_fields: got modelParameters.task, expected a list of model-card fields"}
}
