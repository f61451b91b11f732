{{- define "tokensync.labels" -}}
app.kubernetes.io/name: tokensync
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: tokensync
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tokensync.selector" -}}
app.kubernetes.io/name: tokensync
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
