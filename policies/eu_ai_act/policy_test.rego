package devmlops.eu_ai_act_test

import rego.v1

import data.devmlops.eu_ai_act

high_annotations := {
	"devmlops.io/logging-sink": "loki://ml-audit",
	"devmlops.io/conformity-evidence": "https://docs.example.com/ca/42",
}

obj(annotations) := {"metadata": {"annotations": annotations}}

test_prohibited_is_always_denied if {
	msgs := eu_ai_act.deny with input as {"stage": "admission", "compliance": {"tier": "prohibited"}, "object": obj({})}
	some msg in msgs
	contains(msg, "prohibited")
}

test_high_with_evidence_and_approval_is_served if {
	count(eu_ai_act.deny) == 0 with input as {
		"stage": "serving", "compliance": {"tier": "high"},
		"object": obj(high_annotations), "approval": {"approved": true},
	}
}

test_high_without_approval_is_admitted_with_a_warning if {
	doc := {"stage": "admission", "compliance": {"tier": "high"}, "object": obj(high_annotations), "approval": {"approved": false}}
	count(eu_ai_act.deny) == 0 with input as doc
	count(eu_ai_act.warn) == 1 with input as doc
}

test_high_without_approval_is_not_served if {
	msgs := eu_ai_act.deny with input as {"stage": "serving", "compliance": {"tier": "high"}, "object": obj(high_annotations)}
	some msg in msgs
	contains(msg, "ModelApproval")
}

test_high_needs_logging_sink_and_conformity_evidence if {
	msgs := eu_ai_act.deny with input as {"stage": "admission", "compliance": {"tier": "high"}, "object": obj({"devmlops.io/logging-sink": ""})}
	count(msgs) == 2
}

test_limited_needs_a_transparency_notice if {
	count(eu_ai_act.deny) == 1 with input as {"stage": "admission", "compliance": {"tier": "limited"}, "object": obj({})}
	count(eu_ai_act.deny) == 0 with input as {
		"stage": "admission", "compliance": {"tier": "limited"},
		"object": obj({"devmlops.io/transparency-notice": "https://example.com/ai-notice"}),
	}
}

test_minimal_has_no_demands if {
	count(eu_ai_act.deny) == 0 with input as {"stage": "serving", "compliance": {"tier": "minimal"}, "object": obj({})}
}
