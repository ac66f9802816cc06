{{/*
Names and labels shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "podrestore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: the release name, with the chart name unless the
release name contains it already. */}}
{{- define "podrestore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := include "podrestore.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "podrestore.operator.fullname" -}}
{{ include "podrestore.fullname" . }}-operator
{{- end }}

{{- define "podrestore.agent.fullname" -}}
{{ include "podrestore.fullname" . }}-agent
{{- end }}

{{/* Labels every object carries. */}}
{{- define "podrestore.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: podrestore
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the operator's pods. */}}
{{- define "podrestore.operator.selectorLabels" -}}
app.kubernetes.io/name: podrestore-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "podrestore.operator.labels" -}}
{{ include "podrestore.labels" . }}
{{ include "podrestore.operator.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the agent's pods; the operator finds an agent by them. */}}
{{- define "podrestore.agent.selectorLabels" -}}
app.kubernetes.io/name: podrestore-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "podrestore.agent.labels" -}}
{{ include "podrestore.labels" . }}
{{ include "podrestore.agent.selectorLabels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{/* The agents' selector as the operator's --agent-selector flag reads it. */}}
{{- define "podrestore.agent.selector" -}}
app.kubernetes.io/name=podrestore-agent,app.kubernetes.io/instance={{ .Release.Name }}
{{- end }}

{{- define "podrestore.operator.image" -}}
{{ .Values.operator.image.repository }}:{{ .Values.operator.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "podrestore.agent.image" -}}
{{ .Values.agent.image.repository }}:{{ .Values.agent.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "podrestore.leaseName" -}}
{{ .Values.operator.leaderElection.leaseName | default (include "podrestore.operator.fullname" .) }}
{{- end }}

{{- define "podrestore.caSecretName" -}}
{{ .Values.operator.certificates.caSecretName | default (printf "%s-ca" (include "podrestore.fullname" .)) }}
{{- end }}

{{- define "podrestore.agentSecretName" -}}
{{ .Values.operator.certificates.agentSecretName | default (printf "%s-agent-tls" (include "podrestore.fullname" .)) }}
{{- end }}
