{{/* Name of the chart, or nameOverride. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects, at most 63 characters. */}}
{{- define "herald.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "herald.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "herald.componentLabels" -}}
{{ include "herald.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "herald.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with the token keys and the API key. */}}
{{- define "herald.secretName" -}}
{{- default (include "herald.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* Whether a public key file is mounted for RS256/ES256 tokens. */}}
{{- define "herald.publicKey" -}}
{{- if or .Values.auth.publicKey (and .Values.auth.existingSecret .Values.auth.existingSecretHasPublicKey) }}true{{ end }}
{{- end }}

{{/* Environment shared by gateways and routers. */}}
{{- define "herald.env" -}}
- name: HERALD_NODE__ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- include "herald.natsEnv" . }}
- name: HERALD_AUTH__ANONYMOUS
  value: {{ .Values.auth.anonymous | quote }}
- name: HERALD_AUTH__HMAC_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "herald.secretName" . }}
      key: hmac-secret
      optional: true
{{- if include "herald.publicKey" . }}
- name: HERALD_AUTH__PUBLIC_KEY_FILE
  value: /etc/herald/keys/public-key.pem
{{- end }}
{{- include "herald.controlEnv" . }}
{{- end }}

{{/* What both ends of the control plane need: its key, timeout and mutual TLS. */}}
{{- define "herald.controlEnv" }}
- name: HERALD_CONTROL__KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "herald.secretName" . }}
      key: control-key
- name: HERALD_CONTROL__TIMEOUT
  value: {{ .Values.control.timeout | quote }}
{{- if .Values.control.tls.enabled }}
- name: HERALD_CONTROL__TLS_CA_FILE
  value: /etc/herald/control-tls/ca.crt
- name: HERALD_CONTROL__TLS_CERT_FILE
  value: /etc/herald/control-tls/tls.crt
- name: HERALD_CONTROL__TLS_KEY_FILE
  value: /etc/herald/control-tls/tls.key
- name: HERALD_CONTROL__TLS_SERVER_NAME
  value: {{ .Values.control.tls.serverName | quote }}
{{- end }}
{{- end }}

{{/* The Secret that holds the control plane's TLS files. */}}
{{- define "herald.controlTlsSecret" -}}
{{- default (printf "%s-control-tls" (include "herald.fullname" .)) .Values.control.tls.existingSecret }}
{{- end }}

{{/* A router's Redis settings: the URL, credentials from a Secret, TLS files from the
     mounted Secret, and replication. */}}
{{/* A node's NATS settings: the URLs, credentials from a Secret (a .creds file and the
     TLS files mounted from Secrets). */}}
{{- define "herald.natsEnv" -}}
{{- $nats := .Values.nats }}
{{- $keys := list $nats.urlKey $nats.passwordKey $nats.tokenKey $nats.nkeySeedKey $nats.credentialsKey }}
{{- if and (not $nats.existingSecret) (compact $keys) }}
{{- fail "nats.urlKey, passwordKey, tokenKey, nkeySeedKey and credentialsKey name keys of nats.existingSecret, which is not set" }}
{{- end }}
{{- if $nats.urlKey }}
- name: HERALD_NATS__URL
  valueFrom:
    secretKeyRef:
      name: {{ $nats.existingSecret }}
      key: {{ $nats.urlKey }}
{{- else }}
- name: HERALD_NATS__URL
  value: {{ $nats.url | quote }}
{{- end }}
{{- with $nats.user }}
- name: HERALD_NATS__USER
  value: {{ . | quote }}
{{- end }}
{{- range $name, $key := dict "PASSWORD" $nats.passwordKey "TOKEN" $nats.tokenKey "NKEY_SEED" $nats.nkeySeedKey }}
{{- if $key }}
- name: HERALD_NATS__{{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $nats.existingSecret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- if $nats.credentialsKey }}
- name: HERALD_NATS__CREDENTIALS_FILE
  value: /etc/herald/nats-credentials/user.creds
{{- end }}
{{- if $nats.tls.existingSecret }}
- name: HERALD_NATS__TLS_CA_FILE
  value: /etc/herald/nats-tls/ca.pem
{{- if $nats.tls.clientCertificate }}
- name: HERALD_NATS__TLS_CERT_FILE
  value: /etc/herald/nats-tls/cert.pem
- name: HERALD_NATS__TLS_KEY_FILE
  value: /etc/herald/nats-tls/key.pem
{{- end }}
{{- end }}
{{- end }}

{{/* A URL without the password of its user part, for notes. */}}
{{- define "herald.redactedUrl" -}}
{{- $url := regexReplaceAll "://([^:@/?]*):[^@?]*@" . "://${1}:<hidden>@" -}}
{{- regexReplaceAll "sentinelPassword=[^&]*" $url "sentinelPassword=<hidden>" -}}
{{- end }}

{{- define "herald.redisEnv" -}}
{{- $redis := .Values.redis }}
{{- if and (or $redis.urlKey $redis.sentinel.passwordKey) (not $redis.existingSecret) }}
{{- fail "redis.urlKey and redis.sentinel.passwordKey name keys of redis.existingSecret, which is not set" }}
{{- end }}
{{- if and $redis.existingSecret $redis.urlKey }}
- name: HERALD_REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ $redis.existingSecret }}
      key: {{ $redis.urlKey }}
{{- else }}
- name: HERALD_REDIS__URL
  value: {{ $redis.url | quote }}
{{- end }}
{{- with $redis.username }}
- name: HERALD_REDIS__USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if and $redis.existingSecret $redis.passwordKey }}
- name: HERALD_REDIS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $redis.existingSecret }}
      key: {{ $redis.passwordKey }}
{{- end }}
{{- with $redis.sentinel.username }}
- name: HERALD_REDIS__SENTINEL_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if and $redis.existingSecret $redis.sentinel.passwordKey }}
- name: HERALD_REDIS__SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $redis.existingSecret }}
      key: {{ $redis.sentinel.passwordKey }}
{{- end }}
{{- if $redis.tls.existingSecret }}
- name: HERALD_REDIS__TLS_CA_FILE
  value: /etc/herald/redis-tls/ca.pem
{{- if $redis.tls.clientCertificate }}
- name: HERALD_REDIS__TLS_CERT_FILE
  value: /etc/herald/redis-tls/cert.pem
- name: HERALD_REDIS__TLS_KEY_FILE
  value: /etc/herald/redis-tls/key.pem
{{- end }}
{{- end }}
- name: HERALD_REDIS__WAIT_REPLICAS
  value: {{ $redis.waitReplicas | int | quote }}
- name: HERALD_REDIS__WAIT_TIMEOUT
  value: {{ $redis.waitTimeout | quote }}
{{- end }}

{{/* Volumes shared by gateways and routers: the config file and the token key. */}}
{{- define "herald.volumes" -}}
- name: config
  configMap:
    name: {{ include "herald.fullname" . }}
{{- with .Values.nats }}
{{- if .credentialsKey }}
- name: nats-credentials
  secret:
    secretName: {{ .existingSecret }}
    items:
      - key: {{ .credentialsKey }}
        path: user.creds
{{- end }}
{{- if .tls.existingSecret }}
- name: nats-tls
  secret:
    secretName: {{ .tls.existingSecret }}
    items:
      - key: {{ .tls.caKey }}
        path: ca.pem
      {{- if .tls.clientCertificate }}
      - key: tls.crt
        path: cert.pem
      - key: tls.key
        path: key.pem
      {{- end }}
{{- end }}
{{- end }}
{{- if .Values.control.tls.enabled }}
- name: control-tls
  secret:
    secretName: {{ include "herald.controlTlsSecret" . }}
{{- end }}
{{- if include "herald.publicKey" . }}
- name: keys
  secret:
    secretName: {{ include "herald.secretName" . }}
    items:
      - key: public-key.pem
        path: public-key.pem
{{- end }}
{{- end }}

{{- define "herald.volumeMounts" -}}
- name: config
  mountPath: /etc/herald/config
  readOnly: true
{{- if .Values.nats.credentialsKey }}
- name: nats-credentials
  mountPath: /etc/herald/nats-credentials
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.existingSecret }}
- name: nats-tls
  mountPath: /etc/herald/nats-tls
  readOnly: true
{{- end }}
{{- if .Values.control.tls.enabled }}
- name: control-tls
  mountPath: /etc/herald/control-tls
  readOnly: true
{{- end }}
{{- if include "herald.publicKey" . }}
- name: keys
  mountPath: /etc/herald/keys
  readOnly: true
{{- end }}
{{- end }}

{{/* Probes on the node's HTTP port. */}}
{{- define "herald.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end }}

{{/* Pod scheduling settings of a component's values. */}}
{{- define "herald.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A digest of the keys and TLS settings given in the values (generated ones are kept
     across upgrades, so they do not change it). */}}
{{- define "herald.keysChecksum" -}}
{{- list .Values.api.key .Values.control.key .Values.control.tls .Values.auth.hmacSecret .Values.auth.publicKey .Values.auth.existingSecret | toJson | sha256sum }}
{{- end }}
