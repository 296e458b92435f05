{{/* Written by hand (scripts/sync_chart.py generates the other templates from deploy/). */}}

{{- define "agentmatrix.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The agent's shell Pods (pod driver): agentmatrix and kubectl; by default the chart's own image. */}}
{{- define "agentmatrix.driverImage" -}}
{{ .Values.driverImage.repository | default .Values.image.repository }}:{{ .Values.driverImage.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "agentmatrix.placement" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* How the webhook gets its certificate: auto is cert-manager where its API exists. */}}
{{- define "agentmatrix.certificates" -}}
{{- if ne .Values.certificates "auto" -}}
{{ .Values.certificates }}
{{- else if .Capabilities.APIVersions.Has "cert-manager.io/v1/Certificate" -}}
cert-manager
{{- else -}}
self-signed
{{- end }}
{{- end }}

{{/*
Self-signed certificates (as JSON of Secret data): made at install, then read back from the
cluster at every upgrade, so that they survive it. The serving CA's key is never stored; nor is
the client CA's, which signs only the API server's client certificate. With webhook.clientCA the
API server's own client CA is trusted instead, and no client certificate is made.
*/}}
{{- define "agentmatrix.selfSignedCertificates" -}}
{{- $namespace := .Release.Namespace -}}
{{- $service := printf "agentmatrix-webhook.%s.svc" $namespace -}}
{{- $out := dict -}}
{{- $serving := (lookup "v1" "Secret" $namespace "agentmatrix-webhook-tls").data | default dict -}}
{{- if and (hasKey $serving "ca.crt") (hasKey $serving "tls.crt") (hasKey $serving "tls.key") -}}
{{- $_ := set $out "serving" (pick $serving "ca.crt" "tls.crt" "tls.key") -}}
{{- else -}}
{{- $ca := genCA "agentmatrix-webhook-ca" 3650 -}}
{{- $names := list "agentmatrix-webhook" (printf "agentmatrix-webhook.%s" $namespace) $service (printf "%s.cluster.local" $service) -}}
{{- $cert := genSignedCert $service nil $names 3650 $ca -}}
{{- $_ := set $out "serving" (dict "ca.crt" ($ca.Cert | b64enc) "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- if not .Values.webhook.clientCA -}}
{{- $clientCA := (lookup "v1" "Secret" $namespace "agentmatrix-webhook-client-ca").data | default dict -}}
{{- $client := (lookup "v1" "Secret" $namespace "agentmatrix-apiserver-webhook-client").data | default dict -}}
{{- if and (hasKey $clientCA "ca.crt") (hasKey $client "tls.crt") -}}
{{- $_ := set $out "clientCA" (pick $clientCA "ca.crt") -}}
{{- $_ := set $out "client" (pick $client "ca.crt" "tls.crt" "tls.key") -}}
{{- else -}}
{{- $ca := genCA "agentmatrix-webhook-client-ca" 3650 -}}
{{- $cert := genSignedCert "kube-apiserver-webhook-client" nil nil 3650 $ca -}}
{{- $_ := set $out "clientCA" (dict "ca.crt" ($ca.Cert | b64enc)) -}}
{{- $_ := set $out "client" (dict "ca.crt" ($ca.Cert | b64enc) "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end }}

{{- define "agentmatrix.certificateSecrets" -}}
{{- $labels := "{app.kubernetes.io/name: agentmatrix-webhook, app.kubernetes.io/part-of: agentmatrix}" -}}
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: agentmatrix-webhook-tls
  namespace: {{ .namespace }}
  labels: {{ $labels }}
data:
  {{- toYaml .certificates.serving | nindent 2 }}
{{- with .certificates.clientCA }}
---
# Only the certificate of the CA that signed the API server's client certificate.
apiVersion: v1
kind: Secret
type: Opaque
metadata:
  name: agentmatrix-webhook-client-ca
  namespace: {{ $.namespace }}
  labels: {{ $labels }}
data:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .certificates.client }}
---
# The client certificate the API server presents to the webhook: copy tls.crt and tls.key to the
# API server (deploy/apiserver/, docs/security.md).
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: agentmatrix-apiserver-webhook-client
  namespace: {{ $.namespace }}
  labels: {{ $labels }}
data:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
