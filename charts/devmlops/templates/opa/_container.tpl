{{/* The OPA sidecar: localhost only, policies from ConfigMaps (watched) and/or a bundle service. */}}
{{- define "devmlops.opaContainer" -}}
- name: opa
  image: {{ include "devmlops.imageRef" (dict "image" .Values.opa.image "root" .) }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - run
    - --server
    - --addr=127.0.0.1:8181
    - --diagnostic-addr=0.0.0.0:8282
    - --log-format=json
    - --watch
    # ConfigMap volumes hold ..data/ and timestamped folders: load each file once.
    - --ignore=.*
    {{- if .Values.opa.bundleService.url }}
    - --config-file=/config/opa.yaml
    {{- end }}
    {{- if .Values.opa.builtinPolicies }}
    - /policies/builtin
    {{- end }}
    {{- range $i, $name := .Values.opa.policyConfigMaps }}
    - /policies/extra-{{ $i }}
    {{- end }}
  ports:
    - {name: opa-diag, containerPort: 8282}
  readinessProbe:
    httpGet: {path: /health, port: opa-diag}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /health, port: opa-diag}
    periodSeconds: 10
    failureThreshold: 6
  resources: {{- toYaml .Values.opa.resources | nindent 4 }}
  securityContext: {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- if .Values.opa.builtinPolicies }}
    - {name: policies-builtin, mountPath: /policies/builtin, readOnly: true}
    {{- end }}
    {{- range $i, $name := .Values.opa.policyConfigMaps }}
    - {name: policies-extra-{{ $i }}, mountPath: /policies/extra-{{ $i }}, readOnly: true}
    {{- end }}
    {{- if .Values.opa.bundleService.url }}
    - {name: opa-config, mountPath: /config, readOnly: true}
    {{- end }}
{{- end -}}

{{- define "devmlops.opaVolumes" -}}
{{- if .Values.opa.builtinPolicies }}
- name: policies-builtin
  configMap: {name: {{ include "devmlops.fullname" . }}-policies}
{{- end }}
{{- range $i, $name := .Values.opa.policyConfigMaps }}
- name: policies-extra-{{ $i }}
  configMap: {name: {{ $name }}}
{{- end }}
{{- if .Values.opa.bundleService.url }}
- name: opa-config
  configMap: {name: {{ include "devmlops.fullname" . }}-opa-config}
{{- end }}
{{- end -}}
