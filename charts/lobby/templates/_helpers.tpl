{{/*
lobby.fullname is the prefix of every resource name: the release name, or fullnameOverride. The
binaries' configuration names Services by it (`<release>-interceptor-admin`), so it is short
enough to leave room for the longest suffix.
*/}}
{{- define "lobby.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* lobby.name is the chart name, or nameOverride. */}}
{{- define "lobby.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* lobby.labels are the labels of every object; the argument is (dict "root" $ "component" "x"). */}}
{{- define "lobby.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: lobby
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "lobby.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* lobby.selectorLabels select one component's pods; the argument is (dict "root" $ "component" "x"). */}}
{{- define "lobby.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lobby.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* lobby.image is a component's image reference; the argument is the component's image values and the root. */}}
{{- define "lobby.image" -}}
{{- $img := .image -}}
{{- $ref := printf "%s/%s" $img.registry $img.repository | trimPrefix "/" -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $ref $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* lobby.containerSecurityContext is the restricted container security context every container gets. */}}
{{- define "lobby.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* lobby.podSecurityContext is the pod security context of every pod. */}}
{{- define "lobby.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* lobby.commonEnv is the environment every binary reads: logging and the downward API. */}}
{{- define "lobby.commonEnv" -}}
- name: LOBBY_LOG_LEVEL
  value: {{ .Values.logging.level | quote }}
- name: LOBBY_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/*
lobby.podPlacement renders a pod's scheduling fields; the argument is
(dict "root" $ "component" "x" "values" .Values.x). Without topology spread constraints of their
own, pods are spread softly across nodes.
*/}}
{{- define "lobby.podPlacement" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
topologySpreadConstraints:
{{- if .values.topologySpreadConstraints }}
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "lobby.selectorLabels" . | nindent 8 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* lobby.watchRole is "Role" when one namespace is watched, else "ClusterRole". */}}
{{- define "lobby.watchRole" -}}
{{- if .Values.watchNamespace }}Role{{ else }}ClusterRole{{ end -}}
{{- end -}}

{{/* lobby.interceptorGrace is the interceptor's termination grace period, checked against its drain. */}}
{{- define "lobby.interceptorGrace" -}}
{{- $min := add .Values.interceptor.drainDelaySeconds .Values.interceptor.drainTimeoutSeconds 5 -}}
{{- $grace := .Values.interceptor.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $grace -}}
{{- $min -}}
{{- else if lt (int $grace) (int $min) -}}
{{- fail (printf "interceptor.terminationGracePeriodSeconds is %d, but must be at least drainDelaySeconds + drainTimeoutSeconds + 5 = %d, or Kubernetes kills requests still draining" (int $grace) (int $min)) -}}
{{- else -}}
{{- int $grace -}}
{{- end -}}
{{- end -}}

{{/*
lobby.watchRoleName names a Role or ClusterRole for the watched namespaces; the argument is
(dict "root" $ "suffix" "x"). ClusterRoles are cluster-scoped, so their names carry the release
namespace: two releases of the same name in two namespaces must not share one.
*/}}
{{- define "lobby.watchRoleName" -}}
{{- if .root.Values.watchNamespace -}}
{{- printf "%s-%s" (include "lobby.fullname" .root) .suffix -}}
{{- else -}}
{{- printf "%s-%s-%s" .root.Release.Namespace (include "lobby.fullname" .root) .suffix -}}
{{- end -}}
{{- end -}}

{{/* lobby.watchRoleMeta renders the namespace of a Role in the watched namespace, and nothing for a ClusterRole. */}}
{{- define "lobby.watchRoleMeta" -}}
{{- with .Values.watchNamespace }}
namespace: {{ . }}
{{- end }}
{{- end -}}

{{/*
The interceptor's LOBBY_PROXY_TLS_CERT_DIRS: the mount folder of each Secret of
interceptor.tls.secretNames, in order (the first is the default key pair).
*/}}
{{- define "lobby.interceptorCertDirs" -}}
{{- $dirs := list -}}
{{- range . -}}
{{- $dirs = append $dirs (printf "/etc/lobby/tls/%s" .) -}}
{{- end -}}
{{- join "," $dirs -}}
{{- end -}}

{{/*
lobby.streamMaxSubscribers is interceptor.streamMaxSubscribers, or when empty 2 × (scaler.replicas
+ 1) + 8: every scaler replica and the one a rolling update adds, each possibly still holding a
stream the interceptor has not yet found dead, and eight for tools.
*/}}
{{- define "lobby.streamMaxSubscribers" -}}
{{- if kindIs "invalid" .Values.interceptor.streamMaxSubscribers -}}
{{- add (mul 2 (add (int .Values.scaler.replicas) 1)) 8 -}}
{{- else -}}
{{- int .Values.interceptor.streamMaxSubscribers -}}
{{- end -}}
{{- end -}}

{{/* lobby.adminAllowed lists the ServiceAccounts allowed to read the interceptors' counts: the
chart's scaler first, then adminAuth.extraAllowedServiceAccounts. */}}
{{- define "lobby.adminAllowed" -}}
{{- $sas := list (printf "%s/%s-scaler" .Release.Namespace (include "lobby.fullname" .)) -}}
{{- range .Values.adminAuth.extraAllowedServiceAccounts -}}
{{- $sas = append $sas . -}}
{{- end -}}
{{- join "," $sas -}}
{{- end -}}
