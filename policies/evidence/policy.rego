# METADATA
# title: Evidence conditions
# description: |
#   Judges the predicate of a signed attestation that a ClusterModelPolicy evidence requirement found for the
#   model (conditions.package: devmlops.evidence). Thresholds come from conditions.parameters; every message
#   names the value found and the threshold. A predicate type without rules here is denied (fail closed).
package devmlops.evidence

import rego.v1

prefix := "https://devmlops.io/attestation/"

params := object.get(input, "parameters", {})

predicate := input.attestation.predicate

ptype := input.attestation.predicateType

known_types := {concat("", [prefix, t, "/v1"]) | some t in ["evaluation", "fairness", "robustness", "scan", "dataset-audit"]}

deny contains msg if {
	not ptype in known_types
	msg := sprintf("predicate type %v: devmlops.evidence has no rules for it, expected one of %v", [ptype, sort(known_types)])
}

# -- evaluation: minMetrics {"accuracy": 0.9, ...} ------------------------------------------------------------

deny contains msg if {
	ptype == concat("", [prefix, "evaluation/v1"])
	some metric, minimum in object.get(params, "minMetrics", {})
	not is_number(object.get(predicate.metrics, metric, null))
	msg := sprintf("metric %v: not in the evaluation (it reports %v), expected at least %v", [metric, sort(object.keys(predicate.metrics)), minimum])
}

deny contains msg if {
	ptype == concat("", [prefix, "evaluation/v1"])
	some metric, minimum in object.get(params, "minMetrics", {})
	value := predicate.metrics[metric]
	value < minimum
	msg := sprintf("metric %v: found %v, expected at least %v", [metric, value, minimum])
}

# -- fairness: sensitiveFeatures (must be measured), maxDemographicParityDifference, maxEqualizedOddsDifference ---

measured contains f.name if some f in predicate.sensitiveFeatures

deny contains msg if {
	ptype == concat("", [prefix, "fairness/v1"])
	some name in object.get(params, "sensitiveFeatures", [])
	not name in measured
	msg := sprintf("sensitive feature '%v': not measured (the attestation measures %v), expected a figure for it", [name, sort(measured)])
}

deny contains msg if {
	ptype == concat("", [prefix, "fairness/v1"])
	maximum := params.maxDemographicParityDifference
	some f in predicate.sensitiveFeatures
	f.demographicParityDifference > maximum
	msg := sprintf("demographic parity difference for '%v': found %v, expected at most %v", [f.name, f.demographicParityDifference, maximum])
}

deny contains msg if {
	ptype == concat("", [prefix, "fairness/v1"])
	maximum := params.maxEqualizedOddsDifference
	some f in predicate.sensitiveFeatures
	f.equalizedOddsDifference > maximum
	msg := sprintf("equalized odds difference for '%v': found %v, expected at most %v", [f.name, f.equalizedOddsDifference, maximum])
}

# -- robustness: minPerturbedAccuracy, maxAccuracyDrop, minEpsilon ------------------------------------------------

deny contains msg if {
	ptype == concat("", [prefix, "robustness/v1"])
	minimum := params.minPerturbedAccuracy
	predicate.perturbedAccuracy < minimum
	msg := sprintf("accuracy under %v: found %v, expected at least %v", [predicate.attack.name, predicate.perturbedAccuracy, minimum])
}

deny contains msg if {
	ptype == concat("", [prefix, "robustness/v1"])
	maximum := params.maxAccuracyDrop
	drop := predicate.cleanAccuracy - predicate.perturbedAccuracy
	drop > maximum
	msg := sprintf("accuracy drop under %v: found %v, expected at most %v", [predicate.attack.name, drop, maximum])
}

deny contains msg if {
	ptype == concat("", [prefix, "robustness/v1"])
	minimum := params.minEpsilon
	object.get(predicate.attack, "epsilon", 0) < minimum
	msg := sprintf("attack epsilon: found %v, expected at least %v (a weaker perturbation proves less)", [object.get(predicate.attack, "epsilon", 0), minimum])
}

# -- scan: no unsafe file, no file the scanner could not read (allowErrors), suspicious globals by prefix --------

deny contains msg if {
	ptype == concat("", [prefix, "scan/v1"])
	predicate.summary.unsafe > object.get(params, "maxUnsafe", 0)
	files := [sprintf("%v (%v)", [f.path, concat(", ", [x.global | some x in object.get(f, "findings", []); x.severity == "unsafe"; x.global])]) | some f in predicate.files; f.status == "unsafe"]
	msg := sprintf("unsafe files: found %v (%v), expected at most %v", [predicate.summary.unsafe, concat("; ", files), object.get(params, "maxUnsafe", 0)])
}

deny contains msg if {
	ptype == concat("", [prefix, "scan/v1"])
	not object.get(params, "allowErrors", false)
	predicate.summary.errors > 0
	files := [f.path | some f in predicate.files; f.status == "error"]
	msg := sprintf("files the scanner could not read to their end: found %v (%v), expected 0", [predicate.summary.errors, concat(", ", files)])
}

deny contains msg if {
	ptype == concat("", [prefix, "scan/v1"])
	prefixes := params.allowedGlobalPrefixes
	some f in predicate.files
	some finding in object.get(f, "findings", [])
	finding.severity == "suspicious"
	not allowed_global(finding.global, prefixes)
	msg := sprintf("%v imports %v: not under the allowed prefixes %v", [f.path, finding.global, prefixes])
}

allowed_global(name, prefixes) if {
	some p in prefixes
	startswith(name, p)
}

# -- dataset audit: allowedLicences, requireProvenance (default true), requirePiiScan, maxPiiFindings ------------

deny contains msg if {
	ptype == concat("", [prefix, "dataset-audit/v1"])
	allowed := params.allowedLicences
	some d in predicate.datasets
	not d.licence in allowed
	msg := sprintf("data set '%v': licence %v, expected one of %v", [d.name, d.licence, allowed])
}

deny contains msg if {
	ptype == concat("", [prefix, "dataset-audit/v1"])
	object.get(params, "requireProvenance", true)
	some d in predicate.datasets
	object.get(d.provenance, "source", "") == ""
	msg := sprintf("data set '%v': no provenance source, expected where the data came from", [d.name])
}

deny contains msg if {
	ptype == concat("", [prefix, "dataset-audit/v1"])
	params.requirePiiScan
	some d in predicate.datasets
	not object.get(object.get(d, "pii", {}), "scanned", false)
	msg := sprintf("data set '%v': not scanned for personal data, expected a PII scan", [d.name])
}

deny contains msg if {
	ptype == concat("", [prefix, "dataset-audit/v1"])
	maximum := params.maxPiiFindings
	some d in predicate.datasets
	found := object.get(object.get(d, "pii", {}), "findings", 0)
	found > maximum
	msg := sprintf("data set '%v': %v personal-data findings, expected at most %v", [d.name, found, maximum])
}
