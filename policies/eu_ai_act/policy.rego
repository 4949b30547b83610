# METADATA
# title: EU AI Act risk tiers
# description: |
#   Gives the devmlops.io/eu-ai-act-risk label its meaning. prohibited is never served; high needs a
#   logging sink (Art. 12), conformity evidence (Art. 43) and a second person's ModelApproval for the digest
#   before it is served; limited needs a transparency notice (Art. 50).
package devmlops.eu_ai_act

import rego.v1

annotation_prefix := "devmlops.io/"

tier := input.compliance.tier

annotation(name) := value if {
	value := input.object.metadata.annotations[concat("", [annotation_prefix, name])]
	value != ""
}

deny contains msg if {
	tier == "prohibited"
	msg := "EU AI Act: risk tier 'prohibited' (Art. 5) is never served"
}

deny contains msg if {
	tier == "high"
	not annotation("logging-sink")
	msg := "EU AI Act high risk: annotation devmlops.io/logging-sink is missing; expected where decisions are logged (Art. 12)"
}

deny contains msg if {
	tier == "high"
	not annotation("conformity-evidence")
	msg := "EU AI Act high risk: annotation devmlops.io/conformity-evidence is missing; expected a link to the conformity assessment (Art. 43)"
}

deny contains msg if {
	tier == "high"
	input.stage == "serving"
	not input.approval.approved
	msg := "EU AI Act high risk: no valid ModelApproval for this digest; a second person must approve before it is served (Art. 14)"
}

warn contains msg if {
	tier == "high"
	input.stage == "admission"
	not input.approval.approved
	msg := "EU AI Act high risk: admitted, but it is not served until a second person approves this digest with a ModelApproval"
}

deny contains msg if {
	tier == "limited"
	not annotation("transparency-notice")
	msg := "EU AI Act limited risk: annotation devmlops.io/transparency-notice is missing; users must be told they interact with an AI system (Art. 50)"
}
