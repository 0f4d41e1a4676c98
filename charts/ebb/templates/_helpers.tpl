{{/* The chart name, or nameOverride. */}}
{{- define "ebb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, else <release>-<name>, or <release> when it already contains the
name. Also the Deployment, the Lease and the prefix of every cluster-scoped object.
*/}}
{{- define "ebb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* <fullname>-<suffix>, within 63 characters. Call with (list . "suffix"). */}}
{{- define "ebb.suffixed" -}}
{{- $fullname := include "ebb.fullname" (index . 0) }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" ($fullname | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* name-version, for the helm.sh/chart label. */}}
{{- define "ebb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object, without the component. */}}
{{- define "ebb.commonLabels" -}}
helm.sh/chart: {{ include "ebb.chart" . }}
app.kubernetes.io/name: {{ include "ebb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ebb
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "ebb.labels" -}}
{{ include "ebb.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the operator's pods (immutable in the Deployment). */}}
{{- define "ebb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ebb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "ebb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ebb.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image reference. */}}
{{- define "ebb.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "ebb.subject" -}}
- kind: ServiceAccount
  name: {{ include "ebb.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* The metrics adapter's Service (HTTPS, 443). */}}
{{- define "ebb.adapterServiceName" -}}
{{- include "ebb.suffixed" (list . "metrics-adapter") }}
{{- end }}

{{/* The Service of Prometheus' /metrics. */}}
{{- define "ebb.metricsServiceName" -}}
{{- include "ebb.suffixed" (list . "metrics") }}
{{- end }}

{{/* The Lease of leader election. */}}
{{- define "ebb.leaseName" -}}
{{- include "ebb.fullname" . }}
{{- end }}

{{/* The name of the APIService (fixed by Kubernetes: one per group and version). */}}
{{- define "ebb.apiServiceName" -}}
v1beta1.external.metrics.k8s.io
{{- end }}

{{/* The certificate mode, checked. */}}
{{- define "ebb.certMode" -}}
{{- $mode := .Values.metricsAdapter.certificates.mode }}
{{- if not (has $mode (list "operator" "certManager" "secret")) }}
{{- fail (printf "metricsAdapter.certificates.mode must be operator, certManager or secret, got %q" $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/* The Secret holding the adapter's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "ebb.certSecretName" -}}
{{- $certs := .Values.metricsAdapter.certificates }}
{{- if eq (include "ebb.certMode" .) "secret" }}
{{- required "metricsAdapter.certificates.secretName is required with mode secret: a Secret with tls.crt, tls.key and ca.crt" $certs.secretName }}
{{- else if and (eq (include "ebb.certMode" .) "certManager") $certs.secretName }}
{{- $certs.secretName }}
{{- else }}
{{- include "ebb.suffixed" (list . "certs") }}
{{- end }}
{{- end }}

{{/* The cert-manager Certificate of the serving certificate. */}}
{{- define "ebb.certificateName" -}}
{{- include "ebb.suffixed" (list . "metrics-adapter") }}
{{- end }}

{{/*
DNS names of the adapter's serving certificate. The first, <svc>.<ns>.svc, is the name the API
server verifies, and the one a standby verifies the leader's certificate against.
*/}}
{{- define "ebb.adapterDnsNames" -}}
{{- $svc := include "ebb.adapterServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- list (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) (printf "%s.%s" $svc $ns) | toJson }}
{{- end }}

{{/* Whether the pod mounts a certificate Secret (modes certManager and secret). */}}
{{- define "ebb.mountsCerts" -}}
{{- if and .Values.metricsAdapter.enabled (ne (include "ebb.certMode" .) "operator") }}true{{ end }}
{{- end }}

{{/* Whether the operator manages the certificates itself (mode operator). */}}
{{- define "ebb.operatorCerts" -}}
{{- if and .Values.metricsAdapter.enabled (eq (include "ebb.certMode" .) "operator") }}true{{ end }}
{{- end }}

{{/* The PodDisruptionBudget API: policy/v1 from Kubernetes 1.21, policy/v1beta1 before. */}}
{{- define "ebb.pdbApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version }}
{{- "policy/v1" }}
{{- else }}
{{- "policy/v1beta1" }}
{{- end }}
{{- end }}
