package devmlops.evidence_test

import rego.v1

import data.devmlops.evidence

p := "https://devmlops.io/attestation/"

doc(kind, predicate, parameters) := {
	"attestation": {"predicateType": concat("", [p, kind, "/v1"]), "predicate": predicate},
	"parameters": parameters,
}

fairness := {"sensitiveFeatures": [{"name": "sex", "demographicParityDifference": 0.04, "equalizedOddsDifference": 0.06}]}

unfair := {"sensitiveFeatures": [{"name": "sex", "demographicParityDifference": 0.69, "equalizedOddsDifference": 0.77}]}

fair_params := {"sensitiveFeatures": ["sex"], "maxDemographicParityDifference": 0.1, "maxEqualizedOddsDifference": 0.2}

test_a_fair_model_passes if {
	count(evidence.deny) == 0 with input as doc("fairness", fairness, fair_params)
}

test_an_unfair_model_is_denied_with_the_value_and_the_threshold if {
	msgs := evidence.deny with input as doc("fairness", unfair, fair_params)
	"demographic parity difference for 'sex': found 0.69, expected at most 0.1" in msgs
	"equalized odds difference for 'sex': found 0.77, expected at most 0.2" in msgs
}

test_a_sensitive_feature_not_measured_is_denied if {
	msgs := evidence.deny with input as doc("fairness", fairness, {"sensitiveFeatures": ["sex", "age"]})
	some msg in msgs
	contains(msg, "sensitive feature 'age': not measured")
}

test_evaluation_thresholds if {
	pred := {"metrics": {"accuracy": 0.76, "f1": 0.75}}
	count(evidence.deny) == 0 with input as doc("evaluation", pred, {"minMetrics": {"accuracy": 0.7}})
	msgs := evidence.deny with input as doc("evaluation", pred, {"minMetrics": {"accuracy": 0.9, "rocAuc": 0.8}})
	"metric accuracy: found 0.76, expected at least 0.9" in msgs
	some msg in msgs
	contains(msg, "metric rocAuc: not in the evaluation")
}

test_robustness_thresholds if {
	pred := {"attack": {"name": "FastGradientMethod", "epsilon": 0.1}, "cleanAccuracy": 0.9, "perturbedAccuracy": 0.6}
	msgs := evidence.deny with input as doc("robustness", pred, {"minPerturbedAccuracy": 0.7, "maxAccuracyDrop": 0.1, "minEpsilon": 0.2})
	count(msgs) == 3
	count(evidence.deny) == 0 with input as doc("robustness", pred, {"minPerturbedAccuracy": 0.5})
}

scan_unsafe := {
	"summary": {"filesScanned": 1, "unsafe": 1, "errors": 0},
	"files": [{"path": "model.pkl", "status": "unsafe", "findings": [{"severity": "unsafe", "global": "posix.system", "description": "x"}]}],
}

scan_clean := {
	"summary": {"filesScanned": 1, "unsafe": 0, "errors": 0},
	"files": [{"path": "model.pkl", "status": "suspicious", "findings": [{"severity": "suspicious", "global": "sklearn.linear_model._logistic.LogisticRegression", "description": "x"}]}],
}

test_an_unsafe_scan_is_denied_naming_the_file_and_global if {
	msgs := evidence.deny with input as doc("scan", scan_unsafe, {})
	"unsafe files: found 1 (model.pkl (posix.system)), expected at most 0" in msgs
}

test_suspicious_globals_pass_under_allowed_prefixes_only if {
	count(evidence.deny) == 0 with input as doc("scan", scan_clean, {"allowedGlobalPrefixes": ["sklearn.", "numpy."]})
	msgs := evidence.deny with input as doc("scan", scan_clean, {"allowedGlobalPrefixes": ["numpy."]})
	count(msgs) == 1
}

test_a_scan_error_is_denied_unless_allowed if {
	pred := {"summary": {"filesScanned": 1, "unsafe": 0, "errors": 1}, "files": [{"path": "m.joblib", "status": "error"}]}
	count(evidence.deny) == 1 with input as doc("scan", pred, {})
	count(evidence.deny) == 0 with input as doc("scan", pred, {"allowErrors": true})
}

test_dataset_audit if {
	pred := {"datasets": [
		{"name": "a", "licence": "CC-BY-4.0", "provenance": {"source": "https://example.org/a"}, "pii": {"scanned": true, "findings": 0}},
		{"name": "b", "licence": "proprietary", "provenance": {"source": ""}, "pii": {"scanned": false}},
	]}
	msgs := evidence.deny with input as doc("dataset-audit", pred, {"allowedLicences": ["CC-BY-4.0", "MIT"], "requirePiiScan": true, "maxPiiFindings": 0})
	count(msgs) == 3
	"data set 'b': licence proprietary, expected one of [\"CC-BY-4.0\", \"MIT\"]" in msgs
}

test_an_unknown_predicate_type_is_denied if {
	msgs := evidence.deny with input as {"attestation": {"predicateType": "https://slsa.dev/provenance/v1", "predicate": {}}}
	count(msgs) == 1
}
