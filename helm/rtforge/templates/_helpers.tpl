{{/* Chart name, truncated to a DNS label. */}}
{{- define "rtforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it contains the chart's. */}}
{{- define "rtforge.fullname" -}}
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

{{- define "rtforge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rtforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rtforge.labels" -}}
helm.sh/chart: {{ include "rtforge.chart" . }}
{{ include "rtforge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rtforge
{{- end }}

{{/* rtforge node pods (as opposed to the bundled NATS). */}}
{{- define "rtforge.nodeSelectorLabels" -}}
{{ include "rtforge.selectorLabels" . }}
app.kubernetes.io/component: node
{{- end }}

{{- define "rtforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rtforge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rtforge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "rtforge.clusterName" -}}
{{- default (include "rtforge.fullname" .) .Values.clusterName }}
{{- end }}

{{/* The Secret with the JWT key (and, by default, the API key). */}}
{{- define "rtforge.authSecretName" -}}
{{- default (printf "%s-auth" (include "rtforge.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "rtforge.apiKeySecretName" -}}
{{- default (include "rtforge.authSecretName" .) .Values.apiKey.existingSecret }}
{{- end }}

{{- define "rtforge.natsFullname" -}}
{{- printf "%s-nats" (include "rtforge.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rtforge.natsSelectorLabels" -}}
{{ include "rtforge.selectorLabels" . }}
app.kubernetes.io/component: nats
{{- end }}

{{/* Whether this release runs its own NATS. */}}
{{- define "rtforge.natsBundled" -}}
{{- if and (eq .Values.backend "nats") .Values.nats.bundled.enabled (not .Values.nats.url) (not .Values.nats.existingSecret) }}true{{ end }}
{{- end }}

{{/* NATS URL for the ConfigMap ("" when it comes from a Secret). */}}
{{- define "rtforge.natsUrl" -}}
{{- if .Values.nats.existingSecret }}
{{- else if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else if include "rtforge.natsBundled" . }}
{{- printf "nats://%s:4222" (include "rtforge.natsFullname" .) }}
{{- end }}
{{- end }}

{{/* Seconds between the start of a pod's deletion and the end of its drain, plus a margin. */}}
{{- define "rtforge.drainSeconds" -}}
{{- $d := .Values.drain }}
{{- add (int $d.preStopSleepSeconds) (int (ceil $d.delaySeconds)) (int (ceil $d.timeoutSeconds)) }}
{{- end }}

{{- define "rtforge.terminationGracePeriodSeconds" -}}
{{- $needed := int (include "rtforge.drainSeconds" .) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than drain.preStopSleepSeconds + drain.delaySeconds + drain.timeoutSeconds (%d), or the kubelet kills nodes before they finish draining" (int .Values.terminationGracePeriodSeconds) $needed) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Checks the schema cannot express: they name what to set. */}}
{{- define "rtforge.validate" -}}
{{- if eq .Values.backend "nats" }}
{{- if not (or .Values.nats.url .Values.nats.existingSecret .Values.nats.bundled.enabled) }}
{{- fail "backend nats needs nats.url, nats.existingSecret or nats.bundled.enabled=true" }}
{{- end }}
{{- end }}
{{- if eq .Values.backend "redis" }}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "backend redis needs redis.url or redis.existingSecret" }}
{{- end }}
{{- end }}
{{- if eq .Values.backend "memory" }}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "backend memory holds the cluster state in one process: use replicaCount 1 and no autoscaling, or backend nats/redis" }}
{{- end }}
{{- end }}
{{- if and .Values.auth.enabled (not (or .Values.auth.jwtSecretKey .Values.auth.jwtPublicKeyKey)) }}
{{- fail "auth.enabled needs auth.jwtSecretKey or auth.jwtPublicKeyKey (a key in the auth Secret)" }}
{{- end }}
{{- if and (not .Values.auth.enabled) .Values.auth.allowAnonymous }}
{{- fail "auth.allowAnonymous needs auth.enabled" }}
{{- end }}
{{- if le (float64 .Values.settings.heartbeatTimeout) (float64 .Values.settings.heartbeatInterval) }}
{{- fail "settings.heartbeatTimeout must be greater than settings.heartbeatInterval" }}
{{- end }}
{{- if and .Values.eventsSubject (eq .Values.backend "memory") }}
{{- fail "eventsSubject needs backend nats or redis" }}
{{- end }}
{{- end }}
