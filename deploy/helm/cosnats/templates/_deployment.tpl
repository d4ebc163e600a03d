{{/*
The Deployment of one role; the three roles differ only in their command, ports, probes, env and
volumes. Argument: dict "ctx" $ "component" "<gateway|worker|projector>".
*/}}
{{- define "cosnats.deployment" -}}
{{- $root := .ctx -}}
{{- $role := .component -}}
{{- $r := index $root.Values $role -}}
{{- $fullname := include "cosnats.fullname" $root -}}
{{- $autoscaled := and (hasKey $r "autoscaling") $r.autoscaling.enabled -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}-{{ $role }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cosnats.labels" . | nindent 4 }}
spec:
  {{- if not $autoscaled }}
  replicas: {{ $r.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "cosnats.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {{ $r.maxSurge }}
      maxUnavailable: {{ $r.maxUnavailable }}
  template:
    metadata:
      labels:
        {{- include "cosnats.podLabels" . | nindent 8 }}
      annotations:
        {{- /* A change of a ConfigMap the pods read changes these, so the pods roll. */}}
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if eq $role "projector" }}
        checksum/readsides: {{ include (print $root.Template.BasePath "/readsides-configmap.yaml") $root | sha256sum }}
        {{- end }}
        {{- with merge (dict) $r.podAnnotations $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "cosnats.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
      {{- /* Service links would put <SERVICE>_PORT variables into the environment; a Service named
      "cos" would then set COS_PORT to "tcp://…" and stop every process at start-up. */}}
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ include "cosnats.gracePeriod" . }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $r.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $r.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $r.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $r.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $r.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml $r.topologySpreadConstraints | nindent 8 }}
      {{- else if and $root.Values.topologySpread.enabled $root.Values.topologySpread.topologyKeys }}
      topologySpreadConstraints:
        {{- range $key := $root.Values.topologySpread.topologyKeys }}
        - topologyKey: {{ $key }}
          maxSkew: {{ $root.Values.topologySpread.maxSkew }}
          whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "cosnats.selectorLabels" (dict "ctx" $root "component" $role) | nindent 14 }}
          {{- /* Count only the pods of the current ReplicaSet, so a rollout is not skewed by the old one. */}}
          matchLabelKeys:
            - pod-template-hash
        {{- end }}
      {{- end }}
      containers:
        - name: {{ $role }}
          image: {{ include "cosnats.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["/usr/local/bin/{{ $role }}"]
          ports:
            {{- if eq $role "gateway" }}
            - name: grpc
              containerPort: {{ $r.port }}
              protocol: TCP
            {{- with $r.admin.address }}
            - name: admin
              containerPort: {{ include "cosnats.adminPort" $root }}
              protocol: TCP
            {{- end }}
            {{- end }}
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "cosnats.configName" $root }}
            - configMapRef:
                name: {{ include "cosnats.layoutName" $root }}
            {{- with $root.Values.extraEnvFrom }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            {{- if $root.Values.nats.urlSecret.name }}
            - name: COS_NATS_URL
              valueFrom:
                secretKeyRef:
                  name: {{ $root.Values.nats.urlSecret.name }}
                  key: {{ $root.Values.nats.urlSecret.key }}
            {{- end }}
            {{- /* The role's own NATS user (credentialsSecret) replaces the shared credentials file. */}}
            {{- with $r.nats.credentialsSecret }}
            {{- if and .name .credsKey }}
            - name: COS_NATS_CREDS
              value: /etc/cos/nats-auth/nats.creds
            {{- else if .name }}
            - name: COS_NATS_USER
              valueFrom:
                secretKeyRef:
                  name: {{ .name }}
                  key: {{ .userKey }}
            - name: COS_NATS_PASSWORD_FILE
              value: /etc/cos/nats-auth/password
            {{- end }}
            {{- end }}
            {{- if and $root.Values.nats.credsSecret.name (not $r.nats.credentialsSecret.name) }}
            - name: COS_NATS_CREDS
              value: /etc/cos/nats-creds/nats.creds
            {{- end }}
            {{- with $root.Values.nats.tls }}
            {{- if .caSecretName }}
            - name: COS_NATS_TLS_CA_FILE
              value: /etc/cos/tls/nats-ca/ca.crt
            {{- end }}
            {{- if .clientCertSecretName }}
            - name: COS_NATS_TLS_CERT_FILE
              value: /etc/cos/tls/nats-client/tls.crt
            - name: COS_NATS_TLS_KEY_FILE
              value: /etc/cos/tls/nats-client/tls.key
            {{- end }}
            {{- end }}
            {{- if eq $role "gateway" }}
            - name: COS_PORT
              value: {{ $r.port | quote }}
            {{- if $r.tls.secretName }}
            - name: COS_TLS_CERT_FILE
              value: /etc/cos/tls/gateway/tls.crt
            - name: COS_TLS_KEY_FILE
              value: /etc/cos/tls/gateway/tls.key
            {{- end }}
            {{- if $r.tls.clientCASecretName }}
            - name: COS_TLS_CLIENT_CA_FILE
              value: /etc/cos/tls/gateway-client-ca/ca.crt
            {{- end }}
            {{- with $r.admin.address }}
            - name: COS_ADMIN_ADDRESS
              value: {{ . | quote }}
            {{- end }}
            {{- else if eq $role "worker" }}
            {{- with $root.Values.writeSide }}
            - name: COS_WRITE_SIDE_HOST
              value: {{ .host | quote }}
            - name: COS_WRITE_SIDE_PORT
              value: {{ .port | quote }}
            - name: COS_WRITE_SIDE_USE_TLS
              value: {{ .useTls | quote }}
            {{- if .tls.caSecretName }}
            - name: COS_WRITE_SIDE_TLS_CA_FILE
              value: /etc/cos/tls/write-side-ca/ca.crt
            {{- end }}
            {{- if .tls.clientCertSecretName }}
            - name: COS_WRITE_SIDE_TLS_CERT_FILE
              value: /etc/cos/tls/write-side-client/tls.crt
            - name: COS_WRITE_SIDE_TLS_KEY_FILE
              value: /etc/cos/tls/write-side-client/tls.key
            {{- end }}
            {{- with .tls.serverName }}
            - name: COS_WRITE_SIDE_TLS_SERVER_NAME
              value: {{ . | quote }}
            {{- end }}
            - name: COS_WRITE_SIDE_PROTO_VALIDATION
              value: {{ .protoValidation | quote }}
            {{- with .eventProtos }}
            - name: COS_WRITE_SIDE_EVENT_PROTOS
              value: {{ join "," . | quote }}
            {{- end }}
            {{- with .stateProtos }}
            - name: COS_WRITE_SIDE_STATE_PROTOS
              value: {{ join "," . | quote }}
            {{- end }}
            {{- with .propagatedHeaders }}
            - name: COS_WRITE_SIDE_PROPAGATED_HEADERS
              value: {{ join "," . | quote }}
            {{- end }}
            {{- with .persistedHeaders }}
            - name: COS_WRITE_PERSISTED_HEADERS
              value: {{ join "," . | quote }}
            {{- end }}
            {{- end }}
            - name: COS_STATE_CACHE_ENTRIES
              value: {{ $r.stateCacheEntries | int64 | quote }}
            - name: COS_STATE_CACHE_BYTES
              value: {{ $r.stateCacheBytes | int64 | quote }}
            - name: COS_WORKER_MAX_PENDING_BYTES
              value: {{ $r.maxPendingBytes | int64 | quote }}
            - name: COS_WORKER_MAX_ENTITY_QUEUE
              value: {{ $r.maxEntityQueue | int64 | quote }}
            {{- else if eq $role "projector" }}
            - name: COS_READ_SIDE_ENABLED
              value: "true"
            - name: COS_READ_SIDE_CONFIG
              value: /etc/cos/readsides
            {{- end }}
            {{- with $root.Values.tracing }}
            {{- if .otlpEndpoint }}
            - name: K8S_POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ .otlpEndpoint | quote }}
            - name: OTEL_EXPORTER_OTLP_PROTOCOL
              value: {{ .protocol | quote }}
            {{- with .sampler }}
            - name: OTEL_TRACES_SAMPLER
              value: {{ . | quote }}
            {{- end }}
            {{- with .samplerArg }}
            - name: OTEL_TRACES_SAMPLER_ARG
              value: {{ . | quote }}
            {{- end }}
            {{- $attrs := list (printf "k8s.namespace.name=%s" $root.Release.Namespace) (printf "k8s.deployment.name=%s-%s" $fullname $role) "k8s.pod.name=$(K8S_POD_NAME)" }}
            {{- range $k, $v := .resourceAttributes }}
            {{- $attrs = append $attrs (printf "%s=%v" $k $v) }}
            {{- end }}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ join "," $attrs | quote }}
            {{- end }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $r.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- /* /healthz answers while the process runs: NATS being away makes a process not ready,
          never dead, so liveness must not follow readiness. */}}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml $r.livenessProbe | nindent 12 }}
          readinessProbe:
            {{- if and (eq $role "gateway") (not $r.tls.secretName) }}
            {{- /* The gateway's gRPC health reports "" SERVING only when ready, and NOT_SERVING from
            the start of a shutdown. A grpc probe takes a port number, not a name, and speaks
            plaintext only: with TLS on the port the gateway is probed like the others (/readyz also
            turns not ready from the start of a shutdown). */}}
            grpc:
              port: {{ $r.port }}
              service: ""
            {{- else }}
            httpGet:
              path: /readyz
              port: metrics
            {{- end }}
            {{- toYaml $r.readinessProbe | nindent 12 }}
          {{- if gt (int $r.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $r.preStopSleepSeconds }}
          {{- end }}
          {{- with $r.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $root.Values.nats.credsSecret.name }}
            - name: nats-creds
              mountPath: /etc/cos/nats-creds
              readOnly: true
            {{- end }}
            {{- if $root.Values.nats.tlsSecret.name }}
            - name: nats-tls
              mountPath: /etc/cos/tls/nats
              readOnly: true
            {{- end }}
            {{- if and (ne $role "gateway") $root.Values.writeSide.tlsSecret.name }}
            - name: handlers-tls
              mountPath: /etc/cos/tls/handlers
              readOnly: true
            {{- end }}
            {{- range $m := include "cosnats.secretMounts" . | fromYamlArray }}
            - name: {{ $m.volume }}
              mountPath: {{ $m.path }}
              readOnly: true
            {{- end }}
            {{- if eq $role "projector" }}
            - name: readsides
              mountPath: /etc/cos/readsides
              readOnly: true
            {{- end }}
            {{- with $root.Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $r.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- /* The root filesystem is read-only; a small scratch space for whatever needs one. */}}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with $root.Values.nats.credsSecret }}
        {{- if .name }}
        - name: nats-creds
          secret:
            secretName: {{ .name }}
            defaultMode: 0440
            items:
              - key: {{ .key }}
                path: nats.creds
        {{- end }}
        {{- end }}
        {{- with $root.Values.nats.tlsSecret.name }}
        - name: nats-tls
          secret:
            secretName: {{ . }}
            defaultMode: 0440
        {{- end }}
        {{- if and (ne $role "gateway") $root.Values.writeSide.tlsSecret.name }}
        - name: handlers-tls
          secret:
            secretName: {{ $root.Values.writeSide.tlsSecret.name }}
            defaultMode: 0440
        {{- end }}
        {{- range $m := include "cosnats.secretMounts" . | fromYamlArray }}
        - name: {{ $m.volume }}
          secret:
            secretName: {{ $m.secret }}
            defaultMode: 0440
            items:
              {{- range $m.items }}
              - key: {{ .key }}
                path: {{ .path }}
              {{- end }}
        {{- end }}
        {{- if eq $role "projector" }}
        - name: readsides
          configMap:
            name: {{ include "cosnats.readSidesName" $root }}
        {{- end }}
        {{- with $root.Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $r.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}


{{/*
The Secrets a role mounts for TLS and its own NATS user, as a YAML list of {volume, path, secret,
items: [{key, path}]}; each is mounted read-only, so a renewed Secret (e.g. by cert-manager) reaches
the files, which the processes reload. Argument: dict "ctx" $ "component" "<role>".
*/}}
{{- define "cosnats.secretMounts" -}}
{{- $root := .ctx -}}
{{- $role := .component -}}
{{- $r := index $root.Values $role -}}
{{- $tlsItems := list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key") -}}
{{- $out := list -}}
{{- with $r.nats.credentialsSecret -}}
{{- if and .name .credsKey -}}
{{- $out = append $out (dict "volume" "nats-auth" "path" "/etc/cos/nats-auth" "secret" .name "items" (list (dict "key" .credsKey "path" "nats.creds"))) -}}
{{- else if .name -}}
{{- $out = append $out (dict "volume" "nats-auth" "path" "/etc/cos/nats-auth" "secret" .name "items" (list (dict "key" .passwordKey "path" "password"))) -}}
{{- end -}}
{{- end -}}
{{- with $root.Values.nats.tls -}}
{{- if .caSecretName -}}
{{- $out = append $out (dict "volume" "nats-ca" "path" "/etc/cos/tls/nats-ca" "secret" .caSecretName "items" (list (dict "key" .caKey "path" "ca.crt"))) -}}
{{- end -}}
{{- if .clientCertSecretName -}}
{{- $out = append $out (dict "volume" "nats-client-tls" "path" "/etc/cos/tls/nats-client" "secret" .clientCertSecretName "items" $tlsItems) -}}
{{- end -}}
{{- end -}}
{{- if eq $role "gateway" -}}
{{- if $r.tls.secretName -}}
{{- $out = append $out (dict "volume" "gateway-tls" "path" "/etc/cos/tls/gateway" "secret" $r.tls.secretName "items" $tlsItems) -}}
{{- end -}}
{{- if $r.tls.clientCASecretName -}}
{{- $out = append $out (dict "volume" "gateway-client-ca" "path" "/etc/cos/tls/gateway-client-ca" "secret" $r.tls.clientCASecretName "items" (list (dict "key" $r.tls.clientCAKey "path" "ca.crt"))) -}}
{{- end -}}
{{- else if eq $role "worker" -}}
{{- with $root.Values.writeSide.tls -}}
{{- if .caSecretName -}}
{{- $out = append $out (dict "volume" "write-side-ca" "path" "/etc/cos/tls/write-side-ca" "secret" .caSecretName "items" (list (dict "key" .caKey "path" "ca.crt"))) -}}
{{- end -}}
{{- if .clientCertSecretName -}}
{{- $out = append $out (dict "volume" "write-side-client-tls" "path" "/etc/cos/tls/write-side-client" "secret" .clientCertSecretName "items" $tlsItems) -}}
{{- end -}}
{{- end -}}
{{- else if eq $role "projector" -}}
{{- /* Per read side, under /etc/cos/tls/readsides/<id>/ (volume names by position: ids may hold characters a volume name may not). */ -}}
{{- $i := 0 -}}
{{- range $id, $rs := $root.Values.readSides -}}
{{- $i = add1 $i -}}
{{- $tls := default (dict) (get $rs "tls") -}}
{{- with get $tls "caSecretName" -}}
{{- $out = append $out (dict "volume" (printf "readside-%d-ca" $i) "path" (printf "/etc/cos/tls/readsides/%s/ca" $id) "secret" . "items" (list (dict "key" (default "ca.crt" (get $tls "caKey")) "path" "ca.crt"))) -}}
{{- end -}}
{{- with get $tls "clientCertSecretName" -}}
{{- $out = append $out (dict "volume" (printf "readside-%d-client-tls" $i) "path" (printf "/etc/cos/tls/readsides/%s/client" $id) "secret" . "items" $tlsItems) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
