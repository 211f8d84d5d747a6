{{/*
Names are fixed, not derived from the release name: the operator binds the ClusterRole
baas-agent by that name, and one release serves the whole cluster.
*/}}

{{- define "baas.labels" -}}
app.kubernetes.io/name: baas
{{- end }}

{{- define "baas.selectorLabels" -}}
app.kubernetes.io/name: baas
app.kubernetes.io/component: operator
{{- end }}

{{- define "baas.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{- define "baas.agentImage" -}}
{{ .Values.agent.image.repository | default .Values.image.repository }}:{{ .Values.agent.image.tag | default .Values.image.tag }}
{{- end }}

{{/* The Service's DNS names: what the serving certificate must name. */}}
{{- define "baas.webhookHosts" -}}
{{- list (printf "baas-webhook.%s.svc" .Release.Namespace) (printf "baas-webhook.%s.svc.cluster.local" .Release.Namespace) | toJson }}
{{- end }}

{{/*
The generated serving certificate, as {ca, crt, key} (PEM). Made once per rendering and kept
in .Values, so the Secret and both webhook configurations get the same CA; an existing Secret
that names the same hosts is reused, so `helm upgrade` keeps the CA the API server trusts.
*/}}
{{- define "baas.generatedCert" -}}
{{- if not (hasKey .Values.certificate.generate "_rendered") }}
{{- $hosts := include "baas.webhookHosts" . | fromJsonArray }}
{{- $cert := dict }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace .Values.certificate.secretName }}
{{- if and $existing $existing.data }}
{{- $data := $existing.data }}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") (eq (index $existing.metadata.annotations "backup.appuio.ch/certificate-hosts" | default "") (join "," $hosts)) }}
{{- $cert = dict "ca" (index $data "ca.crt" | b64dec) "crt" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec) }}
{{- end }}
{{- end }}
{{- if not $cert }}
{{- $ca := genCA "baas-webhook-ca" (int .Values.certificate.generate.days) }}
{{- $leaf := genSignedCert (first $hosts) nil $hosts (int .Values.certificate.generate.days) $ca }}
{{- $cert = dict "ca" $ca.Cert "crt" $leaf.Cert "key" $leaf.Key }}
{{- end }}
{{- $_ := set .Values.certificate.generate "_rendered" $cert }}
{{- end }}
{{- index .Values.certificate.generate "_rendered" | toJson }}
{{- end }}

{{/* The base64 CA bundle of the webhook configurations; empty with cert-manager. */}}
{{- define "baas.caBundle" -}}
{{- $mode := .Values.certificate.mode }}
{{- if eq $mode "generate" }}
{{- (include "baas.generatedCert" . | fromJson).ca | b64enc }}
{{- else if eq $mode "existingSecret" }}
{{- $bundle := .Values.certificate.existingSecret.caBundle }}
{{- if not $bundle }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace .Values.certificate.secretName }}
{{- if and $existing $existing.data }}{{ $bundle = index $existing.data "ca.crt" | default "" }}{{ end }}
{{- end }}
{{- required (printf "certificate.existingSecret.caBundle: required with certificate.mode existingSecret, unless the Secret %s/%s holds ca.crt" .Release.Namespace .Values.certificate.secretName) $bundle }}
{{- end }}
{{- end }}

{{/* The clientConfig and certificate annotation shared by both webhook configurations. */}}
{{- define "baas.webhookAnnotations" -}}
{{- if eq .Values.certificate.mode "certManager" -}}
annotations:
  # cert-manager fills clientConfig.caBundle from the Certificate {{ .Release.Namespace }}/baas-webhook.
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/baas-webhook
{{- end }}
{{- end }}

{{- define "baas.clientConfig" -}}
clientConfig:
  service:
    name: baas-webhook
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- with include "baas.caBundle" .root }}
  caBundle: {{ . }}
  {{- end }}
{{- end }}

{{/*
The operator's own requests pass the webhooks by: the runs it creates for Schedules are made
from Schedules these webhooks already admitted, and a tick must not fail because the replica
that answers the API server's admission call is the one that stalled or is restarting.
*/}}
{{- define "baas.matchConditions" -}}
matchConditions:
  - name: not-from-the-operator
    expression: 'request.userInfo.username != "system:serviceaccount:{{ .Release.Namespace }}:baas-operator"'
{{- end }}
