package devmlops.nist_ai_rmf_test

import rego.v1

import data.devmlops.nist_ai_rmf

all_four := {
	"devmlops.io/nist-ai-rmf-govern": "policy/ai-governance.md",
	"devmlops.io/nist-ai-rmf-map": "risk-register#fraud",
	"devmlops.io/nist-ai-rmf-measure": "evals/fraud-2.3.html",
	"devmlops.io/nist-ai-rmf-manage": "runbooks/fraud.md",
}

test_high_risk_needs_all_four_functions if {
	count(nist_ai_rmf.deny) == 4 with input as {"compliance": {"tier": "high"}, "object": {"metadata": {}}}
	count(nist_ai_rmf.deny) == 0 with input as {"compliance": {"tier": "high"}, "object": {"metadata": {"annotations": all_four}}}
}

test_below_the_threshold_nothing_is_required if {
	count(nist_ai_rmf.deny) == 0 with input as {"compliance": {"tier": "limited"}, "object": {"metadata": {}}}
}

test_the_threshold_is_a_parameter if {
	msgs := nist_ai_rmf.deny with input as {
		"compliance": {"tier": "limited"}, "parameters": {"nist_from_tier": "limited"},
		"object": {"metadata": {"annotations": {"devmlops.io/nist-ai-rmf-govern": "x"}}},
	}
	count(msgs) == 3
}

test_a_threshold_that_is_no_tier_denies_instead_of_passing_everything if {
	some bad in ["High", "", 2]
	msgs := nist_ai_rmf.deny with input as {
		"compliance": {"tier": "high"}, "parameters": {"nist_from_tier": bad},
		"object": {"metadata": {"annotations": all_four}},
	}
	count(msgs) == 1
}
