{{/*
Chart name, cut to the 63 characters of a DNS label.
*/}}
{{- define "wsgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>", or the release name when it already contains
the chart name. Cut to 50 characters so that "-dispatcher" still fits.
*/}}
{{- define "wsgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "wsgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "wsgate.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
{{ include "wsgate.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wsgate
{{- end }}

{{/*
Selector labels shared by both components.
*/}}
{{- define "wsgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component's objects. Argument: dict "root" $ "component" "edge"|"dispatcher".
*/}}
{{- define "wsgate.componentLabels" -}}
{{ include "wsgate.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component. Argument: dict "root" $ "component" "edge"|"dispatcher".
*/}}
{{- define "wsgate.componentSelectorLabels" -}}
{{ include "wsgate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of one component's objects. Argument: dict "root" $ "component" "edge"|"dispatcher".
*/}}
{{- define "wsgate.componentName" -}}
{{- printf "%s-%s" (include "wsgate.fullname" .root) .component }}
{{- end }}

{{/*
Name of the ServiceAccount both components run as.
*/}}
{{- define "wsgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wsgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference of a component; the tag defaults to the chart's appVersion.
Argument: dict "root" $ "component" "edge"|"dispatcher".
*/}}
{{- define "wsgate.image" -}}
{{- $image := (index .root.Values .component).image }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/*
Name of the Secret holding the secrets: existingSecret, or the chart's own.
*/}}
{{- define "wsgate.secretName" -}}
{{- default (include "wsgate.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
Where the secret files (JWT public key, NATS creds / NKey seed) and the NATS
TLS files are mounted.
*/}}
{{- define "wsgate.secretMountPath" -}}/etc/wsgate/secrets{{- end }}
{{- define "wsgate.natsTLSMountPath" -}}/etc/wsgate/nats-tls{{- end }}
{{- define "wsgate.routesMountPath" -}}/etc/wsgate/routes{{- end }}

{{/*
The dispatcher's own shutdown bound, services/dispatcher/service.DrainTimeout,
in seconds (tests check the chart against the Go constant).
*/}}
{{- define "wsgate.dispatcherShutdownSeconds" -}}20{{- end }}

{{/*
Kubernetes versions with the built-in preStop sleep action (beta and on by
default from 1.30; the images have no shell for "exec: sleep"). "-0" admits
the pre-release suffixes of managed clusters (v1.30.4-eks-..., -gke.).
*/}}
{{- define "wsgate.preStopSleepKubeVersions" -}}>=1.30.0-0{{- end }}

{{/*
Seconds of preStop sleep one component gets on the target cluster: its
preStopSleepSeconds where the sleep action exists, else 0 (no hook: an older
cluster sends SIGTERM at once and the pod stops accepting while Endpoints
still list it for a moment; clients refused then reconnect). Argument:
dict "root" $ "component" "edge"|"dispatcher".
*/}}
{{- define "wsgate.preStopSleepSeconds" -}}
{{- if semverCompare (include "wsgate.preStopSleepKubeVersions" .root) .root.Capabilities.KubeVersion.Version -}}
{{- int (index .root.Values .component).preStopSleepSeconds -}}
{{- else -}}
0
{{- end -}}
{{- end }}

{{/*
The secrets in use, as YAML: item -> key in the Secret named by
wsgate.secretName. Items: jwtSecret, jwtPublicKey, natsCredentials,
natsNkeySeed, natsPassword, natsToken, dispatcherApiKeys,
dispatcherRoutesSecret. With existingSecret an item is in use
when its existingSecretKeys entry is set; otherwise when its value is set (and
then the chart's Secret holds it under the fixed key given here).
*/}}
{{- define "wsgate.secretKeys" -}}
{{- $keys := dict }}
{{- if .Values.existingSecret }}
{{- range $item, $key := .Values.existingSecretKeys }}
{{- if $key }}{{ $_ := set $keys $item $key }}{{ end }}
{{- end }}
{{- else }}
{{- if .Values.edge.jwt.secret }}{{ $_ := set $keys "jwtSecret" "jwt-secret" }}{{ end }}
{{- if .Values.edge.jwt.publicKey }}{{ $_ := set $keys "jwtPublicKey" "jwt-public-key.pem" }}{{ end }}
{{- if .Values.nats.credentials }}{{ $_ := set $keys "natsCredentials" "nats.creds" }}{{ end }}
{{- if .Values.nats.nkeySeed }}{{ $_ := set $keys "natsNkeySeed" "nats.nk" }}{{ end }}
{{- if .Values.nats.password }}{{ $_ := set $keys "natsPassword" "nats-password" }}{{ end }}
{{- if .Values.nats.token }}{{ $_ := set $keys "natsToken" "nats-token" }}{{ end }}
{{- if .Values.dispatcher.api.keys }}{{ $_ := set $keys "dispatcherApiKeys" "dispatcher-api-keys" }}{{ end }}
{{- if .Values.dispatcher.routes.secret }}{{ $_ := set $keys "dispatcherRoutesSecret" "dispatcher-routes-secret" }}{{ end }}
{{- end }}
{{- toYaml $keys }}
{{- end }}

{{/*
File names of the mounted secret files, per item.
*/}}
{{- define "wsgate.secretFiles" -}}
jwtPublicKey: jwt-public-key.pem
natsCredentials: nats.creds
natsNkeySeed: nats.nk
{{- end }}

{{/*
The dispatcher's routes file, as YAML: configMap (its name) and key; empty
when there are no routes. dispatcher.routes.items are rendered into the
chart's own ConfigMap under routes.yaml.
*/}}
{{- define "wsgate.routesFile" -}}
{{- $r := .Values.dispatcher.routes }}
{{- if $r.existingConfigMap }}
configMap: {{ $r.existingConfigMap | quote }}
key: {{ $r.existingConfigMapKey | quote }}
{{- else if $r.items }}
configMap: {{ include "wsgate.componentName" (dict "root" . "component" "dispatcher-routes") | quote }}
key: routes.yaml
{{- end }}
{{- end }}

{{/*
Content of the routes file rendered from dispatcher.routes.items.
*/}}
{{- define "wsgate.routesData" -}}
{{- with .Values.dispatcher.routes.items }}{{ toYaml (dict "routes" .) }}{{ end }}
{{- end }}

{{/*
Checks of combinations the schema cannot express; fails the render with a
message naming the values at fault.
*/}}
{{- define "wsgate.validate" -}}
{{- if not .Values.nats.url }}
{{- fail "nats.url is required: the URL(s) of your NATS server, e.g. --set nats.url=nats://nats:4222" }}
{{- end }}
{{- $tls := .Values.nats.tls }}
{{- if and $tls.secretName (ne (empty $tls.certKey) (empty $tls.keyKey)) }}
{{- fail "nats.tls.certKey and nats.tls.keyKey must be set together (mutual TLS needs both the certificate and its key)" }}
{{- end }}
{{- if and (not $tls.secretName) (or $tls.certKey $tls.keyKey) }}
{{- fail "nats.tls.certKey/keyKey need nats.tls.secretName: the Secret that holds the files" }}
{{- end }}
{{- $keys := include "wsgate.secretKeys" . | fromYaml }}
{{- if and (hasKey $keys "natsCredentials") (hasKey $keys "natsNkeySeed") }}
{{- fail "set only one of nats.credentials and nats.nkeySeed (or of existingSecretKeys.natsCredentials and natsNkeySeed): NATS_CREDS wins and the seed would be ignored" }}
{{- end }}
{{- $routes := .Values.dispatcher.routes }}
{{- if and $routes.items $routes.existingConfigMap }}
{{- fail "set only one of dispatcher.routes.items and dispatcher.routes.existingConfigMap" }}
{{- end }}
{{- if and (include "wsgate.routesFile" .) (not (hasKey $keys "dispatcherRoutesSecret")) }}
{{- fail "dispatcher.routes need dispatcher.routes.secret (or existingSecretKeys.dispatcherRoutesSecret with existingSecret): DISPATCHER_ROUTES_SECRET signs the requests to the backends" }}
{{- end }}
{{- range $where, $env := dict "extraEnv" (.Values.extraEnv | default dict) "edge.extraEnv" (.Values.edge.extraEnv | default dict) }}
{{- if hasKey $env "EDGE_ID" }}
{{- fail (printf "%s.EDGE_ID cannot be set: every edge replica needs an id of its own, and the default, its pod name, is one; a ConfigMap value would give all replicas the same id and they would end each other's connections in presence. Remove it" $where) }}
{{- end }}
{{- end }}
{{- if and (ne .Values.presence.mode "off") (eq (include "wsgate.underOneSecond" .Values.presence.lease) "true") }}
{{- fail (printf "presence.lease %q is under 1s: WS_PRESENCE_LEASE must be at least 1s (the least TTL NATS keeps) unless presence.mode is off; the edge refuses to start" .Values.presence.lease) }}
{{- end }}
{{- with .Values.inbound }}
{{- if and (ne .mode "off") (regexMatch "[1-9]" .ackWait) (eq (include "wsgate.underOneSecond" .ackWait) "true") }}
{{- fail (printf "inbound.ackWait %q is under 1s: DISPATCHER_ACK_WAIT must be at least 1s unless inbound.mode is off; the dispatcher refuses to start" .ackWait) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when the Go duration given (valid by the schema) is under 1s, else
"false". Sprig's durationRound answers "0s" for anything up to 1s, so d is
under 1s exactly when d + 1ns rounds to "0s" (a Go duration adds up its
parts: "999ms1ns").
*/}}
{{- define "wsgate.underOneSecond" -}}
{{- eq (durationRound (printf "%s1ns" .)) "0s" -}}
{{- end }}

{{/*
One environment variable's value as text. Helm reads the numbers of a values
file as float64, which toString prints in scientific notation from 1e6 on
(2097152 -> "2.097152e+06") and the services' integer parsing refuses: an
integral float prints as an integer; anything else (fractions, strings,
booleans, the int64 of --set) as toString prints it.
*/}}
{{- define "wsgate.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end }}

{{/*
Environment shared by both components (ConfigMap data), as YAML.
*/}}
{{- define "wsgate.sharedEnv" -}}
{{- include "wsgate.validate" . }}
{{- $env := dict "NATS_URL" .Values.nats.url "WS_SUBJECT_PREFIX" .Values.subjectPrefix "LOG_LEVEL" .Values.log.level "LOG_FORMAT" .Values.log.format }}
{{- with .Values.nats.user }}{{ $_ := set $env "NATS_USER" . }}{{ end }}
{{- with .Values.presence }}
{{- $_ := set $env "WS_PRESENCE" .mode }}
{{- $_ := set $env "WS_MEMBERS_BUCKET" .membersBucket }}
{{- $_ := set $env "WS_PRESENCE_BUCKET" .bucket }}
{{- $_ := set $env "WS_PRESENCE_LEASE" .lease }}
{{- $_ := set $env "WS_PRESENCE_GRACE" .grace }}
{{- end }}
{{- with .Values.history }}
{{- $_ := set $env "WS_HISTORY" .storage }}
{{- $_ := set $env "WS_HISTORY_STREAM" .stream }}
{{- $_ := set $env "WS_HISTORY_MAX_AGE" .maxAge }}
{{- $_ := set $env "WS_HISTORY_MAX_PER_SUBJECT" (toString (int64 .maxPerSubject)) }}
{{- $_ := set $env "WS_HISTORY_MAX_BYTES" (toString (int64 .maxBytes)) }}
{{- $_ := set $env "WS_HISTORY_REPLICAS" (toString (int .replicas)) }}
{{- end }}
{{- $keys := include "wsgate.secretKeys" . | fromYaml }}
{{- $files := include "wsgate.secretFiles" . | fromYaml }}
{{- $dir := include "wsgate.secretMountPath" . }}
{{- if hasKey $keys "natsCredentials" }}{{ $_ := set $env "NATS_CREDS" (printf "%s/%s" $dir $files.natsCredentials) }}{{ end }}
{{- if hasKey $keys "natsNkeySeed" }}{{ $_ := set $env "NATS_NKEY_FILE" (printf "%s/%s" $dir $files.natsNkeySeed) }}{{ end }}
{{- with .Values.nats.tls }}
{{- if .secretName }}
{{- $tlsDir := include "wsgate.natsTLSMountPath" $ }}
{{- if .caKey }}{{ $_ := set $env "NATS_TLS_CA" (printf "%s/ca.crt" $tlsDir) }}{{ end }}
{{- if .certKey }}{{ $_ := set $env "NATS_TLS_CERT" (printf "%s/tls.crt" $tlsDir) }}{{ end }}
{{- if .keyKey }}{{ $_ := set $env "NATS_TLS_KEY" (printf "%s/tls.key" $tlsDir) }}{{ end }}
{{- end }}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}{{ $_ := set $env $name (include "wsgate.envValue" $value) }}{{ end }}
{{- toYaml $env }}
{{- end }}

{{/*
The edge's environment (its ConfigMap data), as YAML.
*/}}
{{- define "wsgate.edge.env" -}}
{{- $e := .Values.edge }}
{{- $env := include "wsgate.sharedEnv" . | fromYaml }}
{{- $_ := set $env "EDGE_ADDR" (printf ":%d" (int $e.port)) }}
{{- $_ := set $env "EDGE_PATH" $e.path }}
{{- $_ := set $env "EDGE_HISTORY_REPLAYS" (toString (int .Values.history.replays)) }}
{{- $_ := set $env "EDGE_HISTORY_REPLAY_WAIT" .Values.history.replayWait }}
{{- $_ := set $env "EDGE_HISTORY_REPLAY_TIMEOUT" .Values.history.replayTimeout }}
{{- $_ := set $env "EDGE_HISTORY_WINDOW" (toString (int64 .Values.history.window)) }}
{{- with $e.allowedOrigins }}{{ $_ := set $env "EDGE_ALLOWED_ORIGINS" (join "," .) }}{{ end }}
{{- $_ := set $env "EDGE_ALLOW_ANONYMOUS" (toString $e.allowAnonymous) }}
{{- with $e.jwt.jwksUrl }}{{ $_ := set $env "EDGE_JWT_JWKS_URL" . }}{{ end }}
{{- with $e.authCallout.subject }}{{ $_ := set $env "EDGE_AUTH_CALLOUT_SUBJECT" . }}{{ end }}
{{- $_ := set $env "EDGE_AUTH_CALLOUT_TIMEOUT" $e.authCallout.timeout }}
{{- with $e.jwt.issuer }}{{ $_ := set $env "EDGE_JWT_ISSUER" . }}{{ end }}
{{- with $e.jwt.audience }}{{ $_ := set $env "EDGE_JWT_AUDIENCE" . }}{{ end }}
{{- $keys := include "wsgate.secretKeys" . | fromYaml }}
{{- if hasKey $keys "jwtPublicKey" }}
{{- $files := include "wsgate.secretFiles" . | fromYaml }}
{{- $_ := set $env "EDGE_JWT_PUBLIC_KEY_FILE" (printf "%s/%s" (include "wsgate.secretMountPath" .) $files.jwtPublicKey) }}
{{- end }}
{{- $_ := set $env "EDGE_AUTH_COOKIE" $e.authCookie }}
{{- $_ := set $env "EDGE_AUTH_TIMEOUT" $e.authTimeout }}
{{- $_ := set $env "EDGE_MAX_MESSAGE_BYTES" (printf "%d" (int64 $e.maxMessageBytes)) }}
{{- $_ := set $env "EDGE_SEND_QUEUE" (printf "%d" (int64 $e.sendQueue)) }}
{{- $_ := set $env "EDGE_PING_INTERVAL" $e.pingInterval }}
{{- $_ := set $env "EDGE_RATE_LIMIT" (include "wsgate.envValue" $e.rateLimit.perSecond) }}
{{- $_ := set $env "EDGE_RATE_BURST" (printf "%d" (int64 $e.rateLimit.burst)) }}
{{- $_ := set $env "EDGE_MAX_CONNECTIONS" (printf "%d" (int64 $e.maxConnections)) }}
{{- $_ := set $env "EDGE_MAX_CONNECTIONS_PER_USER" (printf "%d" (int64 $e.maxConnectionsPerUser)) }}
{{- $_ := set $env "EDGE_AUTH_CONCURRENCY" (printf "%d" (int64 $e.authConcurrency)) }}
{{- $_ := set $env "EDGE_AUTH_QUEUE" (printf "%d" (int64 $e.authQueue)) }}
{{- $_ := set $env "EDGE_DRAIN_TIMEOUT" (printf "%ds" (int64 $e.drainTimeout)) }}
{{- with .Values.inbound }}{{ $_ := set $env "WS_INBOUND" .mode }}{{ $_ := set $env "WS_INBOUND_STREAM" .stream }}{{ $_ := set $env "WS_INBOUND_DEDUPE" .dedupe }}{{ $_ := set $env "WS_INBOUND_REPLICAS" (printf "%d" (int64 .replicas)) }}{{ $_ := set $env "WS_INBOUND_MAX_AGE" .maxAge }}{{ end }}
{{- $_ := set $env "EDGE_COMPRESSION" $e.compression }}
{{- range $name, $value := $e.extraEnv }}{{ $_ := set $env $name (include "wsgate.envValue" $value) }}{{ end }}
{{- toYaml $env }}
{{- end }}

{{/*
The dispatcher's environment (its ConfigMap data), as YAML.
*/}}
{{- define "wsgate.dispatcher.env" -}}
{{- $d := .Values.dispatcher }}
{{- $env := include "wsgate.sharedEnv" . | fromYaml }}
{{- $_ := set $env "DISPATCHER_ADDR" (printf ":%d" (int $d.port)) }}
{{- $_ := set $env "DISPATCHER_QUEUE" $d.queue }}
{{- $_ := set $env "DISPATCHER_CONCURRENCY" (printf "%d" (int64 $d.concurrency)) }}
{{- /* The WS_ variables are shared, as in .env.example; the dispatcher ignores dedupe and replicas. */}}
{{- with .Values.inbound }}{{ $_ := set $env "WS_INBOUND" .mode }}{{ $_ := set $env "WS_INBOUND_STREAM" .stream }}{{ $_ := set $env "WS_INBOUND_DEDUPE" .dedupe }}{{ $_ := set $env "WS_INBOUND_REPLICAS" (printf "%d" (int64 .replicas)) }}{{ $_ := set $env "WS_INBOUND_MAX_AGE" .maxAge }}{{ $_ := set $env "DISPATCHER_MAX_DELIVER" (printf "%d" (int64 .maxDeliver)) }}{{ $_ := set $env "DISPATCHER_RETRY_BACKOFF" .retryBackoff }}{{ $_ := set $env "DISPATCHER_ACK_WAIT" .ackWait }}{{ $_ := set $env "DISPATCHER_PREFIX_CONSUMERS_MAX" (printf "%d" (int64 .prefixConsumersMax)) }}{{ end }}
{{- with include "wsgate.routesFile" . | fromYaml }}
{{- $_ := set $env "DISPATCHER_ROUTES_FILE" (printf "%s/%s" (include "wsgate.routesMountPath" $) .key) }}
{{- end }}
{{- range $name, $value := $d.extraEnv }}{{ $_ := set $env $name (include "wsgate.envValue" $value) }}{{ end }}
{{- toYaml $env }}
{{- end }}

{{/*
Checksum of the secret material a component sees, so pods restart when it
changes. With existingSecret the chart cannot see the content: the checksum
covers its name and keys only (restart the pods after rotating it).
*/}}
{{- define "wsgate.secretChecksum" -}}
{{- if .Values.existingSecret }}
{{- printf "%s %s" .Values.existingSecret (toJson .Values.existingSecretKeys) | sha256sum }}
{{- else }}
{{- include "wsgate.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Data of the chart's Secret, base64-encoded, as YAML.
*/}}
{{- define "wsgate.secretData" -}}
{{- $data := dict }}
{{- with .Values.edge.jwt.secret }}{{ $_ := set $data "jwt-secret" (b64enc .) }}{{ end }}
{{- with .Values.edge.jwt.publicKey }}{{ $_ := set $data "jwt-public-key.pem" (b64enc .) }}{{ end }}
{{- with .Values.nats.credentials }}{{ $_ := set $data "nats.creds" (b64enc .) }}{{ end }}
{{- with .Values.nats.nkeySeed }}{{ $_ := set $data "nats.nk" (b64enc .) }}{{ end }}
{{- with .Values.nats.password }}{{ $_ := set $data "nats-password" (b64enc .) }}{{ end }}
{{- with .Values.nats.token }}{{ $_ := set $data "nats-token" (b64enc .) }}{{ end }}
{{- with .Values.dispatcher.api.keys }}{{ $_ := set $data "dispatcher-api-keys" (join "," . | b64enc) }}{{ end }}
{{- with .Values.dispatcher.routes.secret }}{{ $_ := set $data "dispatcher-routes-secret" (b64enc .) }}{{ end }}
{{- if $data }}{{ toYaml $data }}{{ end }}
{{- end }}

{{/*
Secret environment variables of a component: valueFrom.secretKeyRef only,
never a literal value. Argument: dict "root" $ "component" "edge"|"dispatcher".
*/}}
{{- define "wsgate.secretEnv" -}}
{{- $root := .root }}
{{- $keys := include "wsgate.secretKeys" $root | fromYaml }}
{{- $vars := dict "natsPassword" "NATS_PASSWORD" "natsToken" "NATS_TOKEN" }}
{{- if eq .component "edge" }}{{ $_ := set $vars "jwtSecret" "EDGE_JWT_SECRET" }}{{ end }}
{{- if eq .component "dispatcher" }}
{{- $_ := set $vars "dispatcherApiKeys" "DISPATCHER_API_KEYS" }}
{{- $_ := set $vars "dispatcherRoutesSecret" "DISPATCHER_ROUTES_SECRET" }}
{{- end }}
{{- range $item := keys $vars | sortAlpha }}
{{- if hasKey $keys $item }}
- name: {{ index $vars $item }}
  valueFrom:
    secretKeyRef:
      name: {{ include "wsgate.secretName" $root }}
      key: {{ index $keys $item | quote }}
      {{- if and $root.Values.existingSecret (eq $item "jwtSecret") (eq (index $keys $item) "jwt-secret") }}
      {{- /* The default key: a Secret for clients authenticated otherwise lacks it. */}}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Volumes of a component: the secret files, the NATS TLS files and the
dispatcher's routes file, each only when used. Argument: dict "root" $
"component" "edge"|"dispatcher".
*/}}
{{- define "wsgate.volumes" -}}
{{- $root := .root }}
{{- $keys := include "wsgate.secretKeys" $root | fromYaml }}
{{- $files := include "wsgate.secretFiles" $root | fromYaml }}
{{- $items := list "natsCredentials" "natsNkeySeed" }}
{{- if eq .component "edge" }}{{ $items = prepend $items "jwtPublicKey" }}{{ end }}
{{- $used := list }}
{{- range $item := $items }}{{ if hasKey $keys $item }}{{ $used = append $used $item }}{{ end }}{{ end }}
{{- if $used }}
- name: secrets
  secret:
    secretName: {{ include "wsgate.secretName" $root }}
    defaultMode: 0440
    items:
      {{- range $item := $used }}
      - key: {{ index $keys $item | quote }}
        path: {{ index $files $item }}
      {{- end }}
{{- end }}
{{- with $root.Values.nats.tls }}
{{- if .secretName }}
- name: nats-tls
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      {{- if .caKey }}
      - key: {{ .caKey | quote }}
        path: ca.crt
      {{- end }}
      {{- if .certKey }}
      - key: {{ .certKey | quote }}
        path: tls.crt
      - key: {{ .keyKey | quote }}
        path: tls.key
      {{- end }}
{{- end }}
{{- end }}
{{- if eq .component "dispatcher" }}
{{- with include "wsgate.routesFile" $root | fromYaml }}
- name: routes
  configMap:
    name: {{ .configMap }}
    items:
      - key: {{ .key | quote }}
        path: {{ .key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Volume mounts matching wsgate.volumes (read-only). Argument: its volumes YAML list.
*/}}
{{- define "wsgate.volumeMounts" -}}
{{- range $v := . }}
{{- if eq $v.name "secrets" }}
- name: secrets
  mountPath: {{ include "wsgate.secretMountPath" $ }}
  readOnly: true
{{- else if eq $v.name "nats-tls" }}
- name: nats-tls
  mountPath: {{ include "wsgate.natsTLSMountPath" $ }}
  readOnly: true
{{- else if eq $v.name "routes" }}
- name: routes
  mountPath: {{ include "wsgate.routesMountPath" $ }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/*
Probes of a component, all on the named port "http": startup and liveness on
/healthz (the process answers; NATS being down must not restart it),
readiness on /readyz. Argument: the component's probes values.
*/}}
{{- define "wsgate.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .startup.periodSeconds }}
  failureThreshold: {{ .startup.failureThreshold }}
  timeoutSeconds: {{ .startup.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: {{ .readiness.periodSeconds }}
  failureThreshold: {{ .readiness.failureThreshold }}
  timeoutSeconds: {{ .readiness.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .liveness.periodSeconds }}
  failureThreshold: {{ .liveness.failureThreshold }}
  timeoutSeconds: {{ .liveness.timeoutSeconds }}
{{- end }}

{{/*
topologySpreadConstraints of a component: by zone and by node.
Argument: dict "root" $ "component" "edge"|"dispatcher".
*/}}
{{- define "wsgate.topologySpread" -}}
{{- $spread := (index .root.Values .component).topologySpread }}
{{- if $spread.enabled }}
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
- maxSkew: {{ $spread.maxSkew }}
  topologyKey: {{ $key }}
  whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "wsgate.componentSelectorLabels" $ | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}
{{- end }}
