{{/*
Chaining to another external-metrics adapter (metricsAdapter.chain, metricsAdapter.delegate).

ebb.chainRecord: the APIService's backend before this release took it over, as JSON
{service: "ns/name:port", caBundle: PEM, insecureSkipTLSVerify: "true"|"false"}; empty fields
when there was none. Read from this release's record ConfigMap when it exists (upgrades keep what
the install saw: the APIService points at this release by then), else from a lookup of the
APIService when it points at a Service that is not this release's. `helm template` (no cluster)
sees nothing.
*/}}
{{- define "ebb.chainRecord" -}}
{{- $record := dict "service" "" "caBundle" "" "insecureSkipTLSVerify" "false" }}
{{- if and .Values.metricsAdapter.enabled .Values.metricsAdapter.chain.enabled }}
{{- $existing := lookup "v1" "ConfigMap" .Release.Namespace (include "ebb.chainConfigMapName" .) }}
{{- if $existing }}
{{- $data := $existing.data | default dict }}
{{- $_ := set $record "service" ($data.service | default "") }}
{{- $_ := set $record "caBundle" ($data.caBundle | default "") }}
{{- $_ := set $record "insecureSkipTLSVerify" ($data.insecureSkipTLSVerify | default "false") }}
{{- else }}
{{- $api := lookup "apiregistration.k8s.io/v1" "APIService" "" (include "ebb.apiServiceName" .) }}
{{- $svc := dig "spec" "service" dict ($api | default dict) }}
{{- if and $svc.name (not (and (eq $svc.name (include "ebb.adapterServiceName" .)) (eq $svc.namespace .Release.Namespace))) }}
{{- $_ := set $record "service" (printf "%s/%s:%v" $svc.namespace $svc.name (int ($svc.port | default 443))) }}
{{- with $api.spec.caBundle }}
{{- $_ := set $record "caBundle" (b64dec .) }}
{{- end }}
{{- $_ := set $record "insecureSkipTLSVerify" (ternary "true" "false" (eq (toString ($api.spec.insecureSkipTLSVerify | default false)) "true")) }}
{{- end }}
{{- end }}
{{- end }}
{{- $record | toJson }}
{{- end }}

{{/* The record ConfigMap (the previous backend, and the delegate's CA for the operator). */}}
{{- define "ebb.chainConfigMapName" -}}
{{- include "ebb.suffixed" (list . "chain") }}
{{- end }}

{{/* The delegate's Service, `ns/name:port`: metricsAdapter.delegate.service, else the record's. */}}
{{- define "ebb.delegateService" -}}
{{- if .Values.metricsAdapter.enabled }}
{{- .Values.metricsAdapter.delegate.service | default (include "ebb.chainRecord" . | fromJson).service }}
{{- end }}
{{- end }}

{{/* The delegate's CA (PEM): metricsAdapter.delegate.caBundle (base64), else the record's. */}}
{{- define "ebb.delegateCa" -}}
{{- with .Values.metricsAdapter.delegate.caBundle }}{{ b64dec . }}{{ else }}{{ (include "ebb.chainRecord" . | fromJson).caBundle }}{{ end }}
{{- end }}

{{/* The operator's flags for the delegate. */}}
{{- define "ebb.chainArgs" -}}
{{- with include "ebb.delegateService" . }}
- --metrics-adapter-delegate={{ . }}
{{- if include "ebb.delegateCa" $ }}
- --metrics-adapter-delegate-ca=/chain/delegate-ca.crt
{{- else if eq (include "ebb.chainRecord" $ | fromJson).insecureSkipTLSVerify "true" }}
- --metrics-adapter-delegate-insecure
{{- else }}
{{- fail "metricsAdapter.delegate.caBundle is required: the base64 PEM CA of the delegate adapter's serving certificate (its APIService's caBundle)" }}
{{- end }}
{{- if $.Values.metricsAdapter.delegate.clientCertSecret }}
- --metrics-adapter-delegate-client-cert=/chain-client/tls.crt
- --metrics-adapter-delegate-client-key=/chain-client/tls.key
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's volume mounts for the delegate. */}}
{{- define "ebb.chainMounts" -}}
{{- if include "ebb.delegateService" . }}
- name: chain
  mountPath: /chain
  readOnly: true
{{- if .Values.metricsAdapter.delegate.clientCertSecret }}
- name: chain-client
  mountPath: /chain-client
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's volumes for the delegate. */}}
{{- define "ebb.chainVolumes" -}}
{{- if include "ebb.delegateService" . }}
- name: chain
  configMap:
    name: {{ include "ebb.chainConfigMapName" . }}
{{- with .Values.metricsAdapter.delegate.clientCertSecret }}
- name: chain-client
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether this release took the APIService over from another Service (its APIService is then
created by a post-install hook, and given back by the pre-delete hook). */}}
{{- define "ebb.chainTakesOver" -}}
{{- if (include "ebb.chainRecord" . | fromJson).service }}true{{ end }}
{{- end }}
