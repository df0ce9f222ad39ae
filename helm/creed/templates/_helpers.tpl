{{/* Common labels. */}}
{{- define "creed.labels" -}}
app.kubernetes.io/name: creed
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The S3 endpoint the steps use: explicit, else the in-cluster MinIO, else AWS (empty). */}}
{{- define "creed.endpoint" -}}
{{- if .Values.store.endpoint -}}
{{- .Values.store.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s-minio.%s.svc:9000" .Release.Name .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* MinIO root password, required when MinIO is enabled. */}}
{{- define "creed.minioPassword" -}}
{{- $p := required "minio.rootPassword is required when minio.enabled (e.g. --set minio.rootPassword=$(openssl rand -hex 16))" .Values.minio.rootPassword -}}
{{- if lt (len $p) 8 -}}
{{- fail "minio.rootPassword must have at least 8 characters" -}}
{{- end -}}
{{- $p -}}
{{- end -}}

{{/* The container securityContext of the Pod Security "restricted" profile. */}}
{{- define "creed.restrictedContainer" -}}
allowPrivilegeEscalation: false
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The pod securityContext of the Pod Security "restricted" profile (uid/gid 1000: the images' user). */}}
{{- define "creed.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}
