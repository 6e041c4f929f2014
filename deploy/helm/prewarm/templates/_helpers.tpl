{{/* The namespace prewarm runs in: namespace.name, else the release's. */}}
{{- define "prewarm.namespace" -}}
{{- .Values.namespace.name | default .Release.Namespace -}}
{{- end }}

{{/* What the Deployment selects its pods by (the same as the kustomize overlay). */}}
{{- define "prewarm.selectorLabels" -}}
app.kubernetes.io/name: prewarm
{{- end }}

{{- define "prewarm.labels" -}}
{{ include "prewarm.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/*
The rules of one Role in files/rbac.yaml (a copy of deploy/kubernetes/base/rbac.yaml, the one source of
prewarm's RBAC), as YAML. Called with (dict "root" $ "role" NAME).
*/}}
{{- define "prewarm.rbacRules" -}}
{{- $rules := "" -}}
{{- range $doc := regexSplit "(?m)^---[ \t]*$" ($.root.Files.Get "files/rbac.yaml") -1 -}}
{{- $o := fromYaml $doc -}}
{{- if and (eq (get $o "kind") "Role") (eq (dig "metadata" "name" "" $o) $.role) -}}
{{- $rules = toYaml (get $o "rules") -}}
{{- end -}}
{{- end -}}
{{- required (printf "files/rbac.yaml holds no Role named %s" $.role) $rules -}}
{{- end }}

{{/*
prewarm's config.yaml: .Values.config with the values the chart decides filled in where the config sets
none (the Lease in prewarm's namespace, where the leader-election Role is; the api token where the Secret is
mounted; each model's mode), and refused when a model targets a namespace that has no Role.
*/}}
{{- define "prewarm.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $kube := get $cfg "kubernetes" | default dict -}}
{{- if not (hasKey $kube "lease_namespace") -}}
{{- $_ := set $kube "lease_namespace" (include "prewarm.namespace" .) -}}
{{- end -}}
{{- $_ := set $cfg "kubernetes" $kube -}}
{{- $api := get $cfg "api" | default dict -}}
{{- if not (hasKey $api "token_file") -}}
{{- $_ := set $api "token_file" "/var/run/secrets/prewarm/api-token" -}}
{{- end -}}
{{- $_ := set $cfg "api" $api -}}
{{- range $i, $m := (get $cfg "models" | default list) -}}
{{- if not (hasKey $m "mode") -}}
{{- $_ := set $m "mode" $.Values.mode -}}
{{- end -}}
{{- $t := get $m "target" | default dict -}}
{{- if and $.Values.rbac.create (has (get $t "kind") (list "Deployment" "StatefulSet")) -}}
{{- if not (has (get $t "namespace") $.Values.rbac.modelNamespaces) -}}
{{- fail (printf "config.models.%d.target.namespace=%v has no prewarm-actuator Role: add it to rbac.modelNamespaces (now %v)" $i (get $t "namespace") $.Values.rbac.modelNamespaces) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end }}
