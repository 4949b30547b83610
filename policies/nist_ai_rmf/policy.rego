# METADATA
# title: NIST AI RMF evidence
# description: |
#   From a configurable EU AI Act tier upward (parameters.nist_from_tier, default "high"), each NIST AI RMF
#   function (govern, map, measure, manage) must be evidenced by an annotation devmlops.io/nist-ai-rmf-<function>.
package devmlops.nist_ai_rmf

import rego.v1

functions := ["govern", "map", "measure", "manage"]

rank := {"minimal": 0, "limited": 1, "high": 2, "prohibited": 3}

default from_tier := "high"

from_tier := input.parameters.nist_from_tier

applies if rank[input.compliance.tier] >= rank[from_tier]

deny contains msg if {
	applies
	some function in functions
	key := concat("", ["devmlops.io/nist-ai-rmf-", function])
	not has_evidence(key)
	msg := sprintf("NIST AI RMF: annotation %s is missing; tier %q needs evidence for the %s function", [key, input.compliance.tier, upper(function)])
}

has_evidence(key) if input.object.metadata.annotations[key] != ""

# A threshold that is no tier would never apply, and the package would pass everything: a denial names it.
deny contains msg if {
	not rank[from_tier]
	msg := sprintf("parameters.nist_from_tier: got %v, expected one of %v", [from_tier, ["minimal", "limited", "high", "prohibited"]])
}
