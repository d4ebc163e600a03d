{{/*
Names, labels and checks shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "cosnats.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name: fullnameOverride, else "<release>-<name>", else the release name
alone when it already contains the name. Kept to 45 characters so that "-<role>" suffixes and the
"-readsides" ConfigMap stay within the 63 characters of a DNS label.
*/}}
{{- define "cosnats.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "cosnats.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cosnats.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels that select the pods of one component. Argument: dict "ctx" $ "component" "gateway".
*/}}
{{- define "cosnats.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cosnats.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Every label of an object. Argument: dict "ctx" $ "component" "<name or empty>". */}}
{{- define "cosnats.labels" -}}
{{ include "cosnats.selectorLabels" . }}
helm.sh/chart: {{ include "cosnats.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: cosnats
{{- with omit .ctx.Values.commonLabels "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" "helm.sh/chart" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" "app.kubernetes.io/part-of" }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "cosnats.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cosnats.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: a digest wins over a tag; the tag defaults to the chart's appVersion. */}}
{{- define "cosnats.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the projector Deployment is rendered: enabled, and at least one read side enabled. */}}
{{- define "cosnats.projectorEnabled" -}}
{{- $any := false -}}
{{- range $id, $rs := .Values.readSides -}}
{{- if or (not (hasKey $rs "enabled")) $rs.enabled -}}
{{- $any = true -}}
{{- end -}}
{{- end -}}
{{- if and .Values.projector.enabled $any -}}true{{- end -}}
{{- end -}}

{{/* The port of gateway.admin.address (host:port). */}}
{{- define "cosnats.adminPort" -}}
{{- regexReplaceAll "^.*:" .Values.gateway.admin.address "" -}}
{{- end -}}

{{/* Names of the ConfigMaps. */}}
{{- define "cosnats.configName" -}}{{ include "cosnats.fullname" . }}-config{{- end -}}
{{- define "cosnats.layoutName" -}}{{ include "cosnats.fullname" . }}-layout{{- end -}}
{{- define "cosnats.readSidesName" -}}{{ include "cosnats.fullname" . }}-readsides{{- end -}}

{{/*
Checks that the schema cannot express (or that a user skipping schema validation would miss), each
failing the render with a message that names the value to set.
*/}}
{{- define "cosnats.validate" -}}
{{- if and (not .Values.nats.url) (not .Values.nats.urlSecret.name) -}}
{{- fail "nats.url is required: the NATS server(s) every role connects to, e.g. --set nats.url=nats://nats.nats:4222 (or nats.urlSecret.name for a URL kept in a Secret). Without it the processes would each start an embedded server." -}}
{{- end -}}
{{- if and .Values.worker.enabled (not .Values.writeSide.host) -}}
{{- fail "writeSide.host is required while worker.enabled is true: the address of your write handler (WriteSideHandlerService), e.g. --set writeSide.host=my-handler.my-namespace.svc" -}}
{{- end -}}
{{- if and .Values.writeSide.protoValidation (or (not .Values.writeSide.eventProtos) (not .Values.writeSide.stateProtos)) -}}
{{- fail "writeSide.eventProtos and writeSide.stateProtos must both list message names when writeSide.protoValidation is true" -}}
{{- end -}}
{{- with .Values.gateway -}}
{{- if and .tls.clientCASecretName (not .tls.secretName) -}}
{{- fail "gateway.tls.clientCASecretName (mTLS) needs gateway.tls.secretName: client certificates are checked only on a TLS port" -}}
{{- end -}}
{{- if .admin.address -}}
{{- $port := include "cosnats.adminPort" $ | int -}}
{{- if or (eq $port (int .port)) (eq $port (int $.Values.metrics.port)) -}}
{{- fail (printf "gateway.admin.address %q must use a port other than gateway.port (%v) and metrics.port (%v)" .admin.address .port $.Values.metrics.port) -}}
{{- end -}}
{{- end -}}
{{- if .admin.service.enabled -}}
{{- if not .admin.address -}}
{{- fail "gateway.admin.service.enabled needs gateway.admin.address, e.g. 0.0.0.0:9001" -}}
{{- end -}}
{{- if regexMatch "^(127\\.|localhost:|\\[::1\\]:)" .admin.address -}}
{{- fail (printf "gateway.admin.service.enabled: gateway.admin.address %q listens on loopback, which a Service cannot reach; use 0.0.0.0:<port>, or keep loopback and use kubectl port-forward without the Service" .admin.address) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $role := list "gateway" "worker" -}}
{{- $r := index $.Values $role -}}
{{- if and $r.enabled $r.autoscaling.enabled -}}
{{- if lt (int $r.autoscaling.maxReplicas) (int $r.autoscaling.minReplicas) -}}
{{- fail (printf "%s.autoscaling.maxReplicas (%v) must be at least %s.autoscaling.minReplicas (%v)" $role $r.autoscaling.maxReplicas $role $r.autoscaling.minReplicas) -}}
{{- end -}}
{{- if and (not $r.autoscaling.targetCPUUtilizationPercentage) (not $r.autoscaling.targetMemoryUtilizationPercentage) -}}
{{- fail (printf "%s.autoscaling needs a target: targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" $role) -}}
{{- end -}}
{{- if and $r.autoscaling.targetCPUUtilizationPercentage (not (dig "requests" "cpu" "" $r.resources)) -}}
{{- fail (printf "%s.resources.requests.cpu is required by %s.autoscaling.targetCPUUtilizationPercentage (utilization is relative to the request)" $role $role) -}}
{{- end -}}
{{- if and $r.autoscaling.targetMemoryUtilizationPercentage (not (dig "requests" "memory" "" $r.resources)) -}}
{{- fail (printf "%s.resources.requests.memory is required by %s.autoscaling.targetMemoryUtilizationPercentage" $role $role) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The guard of the settings that can never change. The ConfigMap <fullname>-layout records them at
install; on every later render against a cluster (install, upgrade, `--dry-run=server`) the recorded
values are read back with lookup and a difference fails the render. `helm template` and client-side
dry runs cannot look anything up, so they cannot check.
*/}}
{{- define "cosnats.layoutGuard" -}}
{{- $recorded := lookup "v1" "ConfigMap" .Release.Namespace (include "cosnats.layoutName" .) -}}
{{- with $recorded -}}
{{- $data := default (dict) .data -}}
{{- $checks := list (list "layout.numShards" "COS_NUM_SHARDS" (toString $.Values.layout.numShards)) (list "layout.natsPrefix" "COS_NATS_PREFIX" (toString $.Values.layout.natsPrefix)) -}}
{{- range $checks -}}
{{- $value := index . 0 -}}
{{- $key := index . 1 -}}
{{- $want := index . 2 -}}
{{- if and (hasKey $data $key) (ne (get $data $key) $want) -}}
{{- fail (printf "%s cannot change after install: this release's event store was created with %s=%s (recorded in ConfigMap %s/%s), and %q would address other subjects and streams, orphaning every stored event. Set %s back to %q. To start a new, empty event store instead, delete that ConfigMap (and the old streams) first." $value $key (get $data $key) $.Release.Namespace (include "cosnats.layoutName" $) $want $value (get $data $key)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod labels of a role: selector labels, commonLabels, and the global and role podLabels. */}}
{{- define "cosnats.podLabels" -}}
{{- $r := index .ctx.Values .component -}}
{{- include "cosnats.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cosnats
{{- $user := merge (dict) $r.podLabels .ctx.Values.podLabels .ctx.Values.commonLabels }}
{{- with omit $user "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" "app.kubernetes.io/version" "app.kubernetes.io/part-of" }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
terminationGracePeriodSeconds of a role: its preStop sleep, the drain (COS_SHUTDOWN_TIMEOUT) and a
margin, so that SIGKILL never interrupts a drain that keeps to its timeout.
*/}}
{{- define "cosnats.gracePeriod" -}}
{{- $r := index .ctx.Values .component -}}
{{- add (int $r.preStopSleepSeconds) (int .ctx.Values.config.shutdownTimeoutSeconds) (int .ctx.Values.config.terminationGraceMarginSeconds) -}}
{{- end -}}
