{{/*
Names and labels shared by every template. The pod identity labels (name + instance) are part of the
run contract: the operator passes them to each store's NetworkPolicy so its own pods are let in.
*/}}

{{- define "sessionstore-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sessionstore-operator.fullname" -}}
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

{{- define "sessionstore-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable, the Deployment selector is immutable. */}}
{{- define "sessionstore-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sessionstore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sessionstore-operator.labels" -}}
helm.sh/chart: {{ include "sessionstore-operator.chart" . }}
{{ include "sessionstore-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sessionstore
{{- end }}

{{/* The selector labels as `k=v,k=v` for OPERATOR_POD_LABELS. */}}
{{- define "sessionstore-operator.podLabelsFlag" -}}
{{- $labels := include "sessionstore-operator.selectorLabels" . | fromYaml }}
{{- $pairs := list }}
{{- range $k := keys $labels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $labels $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "sessionstore-operator.monitoringLabelsFlag" -}}
{{- $pairs := list }}
{{- range $k := keys .Values.monitoringNamespaceLabels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $.Values.monitoringNamespaceLabels $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "sessionstore-operator.dnsPodLabelsFlag" -}}
{{- $pairs := list }}
{{- range $k := keys .Values.clusterDns.podLabels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $.Values.clusterDns.podLabels $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "sessionstore-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sessionstore-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sessionstore-operator.leaseName" -}}
{{- default (include "sessionstore-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "sessionstore-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Rules for the namespaced resources the operator manages: exactly the verbs the code calls (no
wildcards; Secrets get/create/patch only, never list/watch, so there is no Secret cache). Children
are removed by the garbage collector through their ownerReference, so only PodDisruptionBudgets
(dropped when replicas fall to 1), ServiceMonitors (dropped when turned off) and Pods (the ordered
rolling update of stores with replicas restarts them one at a time) need delete. Core Events are
only listed, for the diagnosis of a store whose pods the StatefulSet cannot create.
Server-side apply of a new object is authorised as create, so applied kinds have create and patch.
Used by the ClusterRole (all namespaces) or by one Role per watched namespace.
*/}}
{{- define "sessionstore-operator.rules" -}}
- apiGroups: ["sessionstore.dev"]
  resources: ["sessionstores"]
  verbs: ["list", "watch"]
- apiGroups: ["sessionstore.dev"]
  resources: ["sessionstores/status"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Read only while a store's pods were not created: the StatefulSet's FailedCreate Events say why.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- if .Values.rbac.certManager }}
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch"]
{{- end }}
{{- if .Values.rbac.serviceMonitors }}
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- end }}

{{/* Refuse combinations that would run two active controllers or watch nothing. */}}
{{- define "sessionstore-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: two controllers without a lease would fight over the same stores" }}
{{- end }}
{{- end }}
