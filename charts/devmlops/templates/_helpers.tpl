{{/* Names, labels and the image reference shared by every template. */}}

{{- define "devmlops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "devmlops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "devmlops.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "devmlops.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; pass (dict "root" $ "component" "webhook"). */}}
{{- define "devmlops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: devmlops
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "devmlops.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "devmlops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "devmlops.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "devmlops.webhookName" -}}{{ include "devmlops.fullname" . }}-webhook{{- end -}}
{{- define "devmlops.operatorName" -}}{{ include "devmlops.fullname" . }}-operator{{- end -}}
{{- define "devmlops.tlsSecret" -}}{{ include "devmlops.fullname" . }}-webhook-tls{{- end -}}
{{- define "devmlops.caSecret" -}}{{ include "devmlops.fullname" . }}-webhook-ca{{- end -}}
{{- define "devmlops.validatingName" -}}{{ include "devmlops.fullname" . }}-validating{{- end -}}
{{- define "devmlops.mutatingName" -}}{{ include "devmlops.fullname" . }}-mutating{{- end -}}
{{- define "devmlops.peeringName" -}}{{ include "devmlops.fullname" . }}{{- end -}}

{{/* repository@digest, or repository:tag (tag defaults to the appVersion); pass an image dict and the root. */}}
{{- define "devmlops.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "devmlops.image" -}}{{ include "devmlops.imageRef" (dict "image" .Values.image "root" .) }}{{- end -}}

{{/* Namespaces the webhooks never see: kube-system, the release namespace and any the user adds. */}}
{{- define "devmlops.excludedNamespaces" -}}
{{- $excluded := list "kube-system" .Release.Namespace -}}
{{- range .Values.webhook.excludedNamespaces }}{{ $excluded = append $excluded . }}{{ end -}}
{{- toJson (uniq $excluded) -}}
{{- end -}}

{{/* CEL of the matchConditions for Deployments and StatefulSets: labelled as a model server or running one. */}}
{{- define "devmlops.modelServerCondition" -}}
{{- $images := list -}}
{{- range .Values.webhook.modelServerImages }}{{ $images = append $images (printf "c.image.contains('%s')" .) }}{{ end -}}
{{- $any := join " || " $images -}}
{{- $server := "(has(OBJ.metadata.labels) && ('devmlops.io/model-server' in OBJ.metadata.labels || 'devmlops.io/model-deployment' in OBJ.metadata.labels)) || OBJ.spec.template.spec.containers.exists(c, ANY) || (has(OBJ.spec.template.spec.initContainers) && OBJ.spec.template.spec.initContainers.exists(c, ANY))" | replace "ANY" $any -}}
{{ $server | replace "OBJ" "object" }} || (oldObject != null && ({{ $server | replace "OBJ" "oldObject" }})) || {{ include "devmlops.ownedByModelCondition" . }}
{{- end -}}

{{/* CEL for Services outside enforcement: a model owns (owned) it, or its name is a model's address (KServe's
per-component names, a rollout's new version), or it sets externalIPs; as MODEL_SERVICE in src/devmlops/webhook/registration.py. */}}
{{- define "devmlops.modelServiceCondition" -}}
{{ include "devmlops.ownedByModelCondition" . }} || object.metadata.name.endsWith('-predictor') || object.metadata.name.endsWith('-transformer') || object.metadata.name.endsWith('-explainer') || object.metadata.name.endsWith('-canary') || (has(object.spec.externalIPs) && size(object.spec.externalIPs) > 0)
{{- end -}}

{{/* CEL for EndpointSlices: one that joins (joined) a Service, written by anyone but the EndpointSlice controller;
as service_slice_condition() in src/devmlops/webhook/registration.py. */}}
{{- define "devmlops.serviceSliceCondition" -}}
{{- $names := list -}}
{{- range .Values.webhook.endpointSliceUsers }}{{ $names = append $names (printf "'%s'" .) }}{{ end -}}
{{- $joins := "has(OBJ.metadata.labels) && 'kubernetes.io/service-name' in OBJ.metadata.labels" -}}
!(request.userInfo.username in [{{ join ", " $names }}]) && (({{ $joins | replace "OBJ" "object" }}) || (oldObject != null && {{ $joins | replace "OBJ" "oldObject" }}))
{{- end -}}

{{/* CEL for Pods and workloads outside enforcement: they, or their pod template, wear (or wore) a label by which a
model's Service selects its Pods; as ROUTING_CONDITION in src/devmlops/webhook/registration.py. */}}
{{- define "devmlops.routingCondition" -}}
((has(object.metadata) && has(object.metadata.labels) && (object.metadata.labels.exists(k, k in ['devmlops.io/model-deployment', 'devmlops.io/canary-of', 'serving.kserve.io/inferenceservice'] || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]model[^a-zA-Z0-9]deployment$') || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]canary[^a-zA-Z0-9]of$')) || ('app' in object.metadata.labels && object.metadata.labels['app'].startsWith('isvc.')))) || (has(object.spec) && has(object.spec.template) && has(object.spec.template.metadata) && has(object.spec.template.metadata.labels) && (object.spec.template.metadata.labels.exists(k, k in ['devmlops.io/model-deployment', 'devmlops.io/canary-of', 'serving.kserve.io/inferenceservice'] || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]model[^a-zA-Z0-9]deployment$') || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]canary[^a-zA-Z0-9]of$')) || ('app' in object.spec.template.metadata.labels && object.spec.template.metadata.labels['app'].startsWith('isvc.')))) || (has(object.spec) && has(object.spec.jobTemplate) && has(object.spec.jobTemplate.spec) && has(object.spec.jobTemplate.spec.template) && has(object.spec.jobTemplate.spec.template.metadata) && has(object.spec.jobTemplate.spec.template.metadata.labels) && (object.spec.jobTemplate.spec.template.metadata.labels.exists(k, k in ['devmlops.io/model-deployment', 'devmlops.io/canary-of', 'serving.kserve.io/inferenceservice'] || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]model[^a-zA-Z0-9]deployment$') || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]canary[^a-zA-Z0-9]of$')) || ('app' in object.spec.jobTemplate.spec.template.metadata.labels && object.spec.jobTemplate.spec.template.metadata.labels['app'].startsWith('isvc.'))))) || (oldObject != null && ((has(oldObject.metadata) && has(oldObject.metadata.labels) && (oldObject.metadata.labels.exists(k, k in ['devmlops.io/model-deployment', 'devmlops.io/canary-of', 'serving.kserve.io/inferenceservice'] || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]model[^a-zA-Z0-9]deployment$') || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]canary[^a-zA-Z0-9]of$')) || ('app' in oldObject.metadata.labels && oldObject.metadata.labels['app'].startsWith('isvc.')))) || (has(oldObject.spec) && has(oldObject.spec.template) && has(oldObject.spec.template.metadata) && has(oldObject.spec.template.metadata.labels) && (oldObject.spec.template.metadata.labels.exists(k, k in ['devmlops.io/model-deployment', 'devmlops.io/canary-of', 'serving.kserve.io/inferenceservice'] || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]model[^a-zA-Z0-9]deployment$') || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]canary[^a-zA-Z0-9]of$')) || ('app' in oldObject.spec.template.metadata.labels && oldObject.spec.template.metadata.labels['app'].startsWith('isvc.')))) || (has(oldObject.spec) && has(oldObject.spec.jobTemplate) && has(oldObject.spec.jobTemplate.spec) && has(oldObject.spec.jobTemplate.spec.template) && has(oldObject.spec.jobTemplate.spec.template.metadata) && has(oldObject.spec.jobTemplate.spec.template.metadata.labels) && (oldObject.spec.jobTemplate.spec.template.metadata.labels.exists(k, k in ['devmlops.io/model-deployment', 'devmlops.io/canary-of', 'serving.kserve.io/inferenceservice'] || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]model[^a-zA-Z0-9]deployment$') || k.matches('^devmlops[^a-zA-Z0-9]io[^a-zA-Z0-9]canary[^a-zA-Z0-9]of$')) || ('app' in oldObject.spec.jobTemplate.spec.template.metadata.labels && oldObject.spec.jobTemplate.spec.template.metadata.labels['app'].startsWith('isvc.'))))))
{{- end -}}

{{- define "devmlops.ownedByModelCondition" -}}
(has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, r.kind in ['ModelDeployment', 'InferenceService'])) || (oldObject != null && has(oldObject.metadata.ownerReferences) && oldObject.metadata.ownerReferences.exists(r, r.kind in ['ModelDeployment', 'InferenceService']))
{{- end -}}
