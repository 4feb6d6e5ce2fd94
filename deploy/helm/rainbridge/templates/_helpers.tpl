{{/* Names. `bifrost.*` are the names Bifrost's chart uses; `rainbridge.*` alias them. */}}
{{- define "bifrost.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "rainbridge.name" -}}{{ include "bifrost.name" . }}{{- end }}

{{- define "bifrost.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "bifrost.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}
{{- define "rainbridge.fullname" -}}{{ include "bifrost.fullname" . }}{{- end }}

{{- define "bifrost.headlessName" -}}
{{- printf "%s-headless" (include "bifrost.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bifrost.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bifrost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- define "rainbridge.selectorLabels" -}}{{ include "bifrost.selectorLabels" . }}{{- end }}

{{- define "bifrost.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bifrost.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rainbridge
{{- end }}
{{- define "rainbridge.labels" -}}{{ include "bifrost.labels" . }}{{- end }}

{{- define "bifrost.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bifrost.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The gateway's settings: `bifrost:` with `rainbridge:` merged over it, as JSON. */}}
{{- define "bifrost.settings" -}}
{{- $b := deepCopy (default dict .Values.bifrost) }}
{{- $r := deepCopy (default dict .Values.rainbridge) }}
{{- mustMergeOverwrite $b $r | toJson }}
{{- end }}

{{/* The external PostgreSQL settings: `postgresql.external` (Bifrost's chart, the seed's
files) with `storage.postgresql.external` merged over it (an alias; its keys win). */}}
{{- define "bifrost.postgres" -}}
{{- $alias := ((.Values.storage.postgresql | default dict).external | default dict) }}
{{- mustMergeOverwrite (deepCopy .Values.postgresql.external) (deepCopy $alias) | toJson }}
{{- end }}

{{- define "bifrost.clusterEnabled" -}}
{{- $s := include "bifrost.settings" . | fromJson }}
{{- if (($s.cluster | default dict).enabled) }}true{{ end }}
{{- end }}

{{/* Deployment or StatefulSet (see `workload` in values.yaml). */}}
{{- define "bifrost.workloadKind" -}}
{{- $s := include "bifrost.settings" . | fromJson }}
{{- $c := $s.cluster | default dict }}
{{- if eq .Values.workload "Deployment" "StatefulSet" }}
{{- .Values.workload }}
{{- else if ne .Values.workload "auto" }}
{{- fail (printf "workload: %q is not one of auto, Deployment, StatefulSet" .Values.workload) }}
{{- else if eq .Values.storage.mode "sqlite" }}StatefulSet
{{- else if and $c.enabled $c.peers }}StatefulSet
{{- else }}Deployment
{{- end }}
{{- end }}

{{/* Refuse what an operator would want refused, naming the value. */}}
{{- define "bifrost.validate" -}}
{{- $s := include "bifrost.settings" . | fromJson }}
{{- $c := $s.cluster | default dict }}
{{- $d := $c.discovery | default dict }}
{{- $mode := .Values.storage.mode }}
{{- if not (has $mode (list "sqlite" "postgres")) }}
{{- fail (printf "storage.mode: %q is not one of sqlite, postgres" $mode) }}
{{- end }}
{{- if and $c.enabled (eq $mode "sqlite") }}
{{- fail "bifrost.cluster.enabled=true needs storage.mode=postgres: SQLite is single-node only (replicas would not share keys, budgets or usage)" }}
{{- end }}
{{- if eq $mode "postgres" }}
{{- $pg := include "bifrost.postgres" . | fromJson }}
{{- if not $pg.host }}
{{- fail "storage.mode=postgres needs postgresql.external.host (this chart does not run PostgreSQL)" }}
{{- end }}
{{- if $pg.password }}
{{- fail "postgresql.external.password: put the password in a Secret and name it in postgresql.external.existingSecret (never inline)" }}
{{- end }}
{{- if not $pg.existingSecret }}
{{- fail "storage.mode=postgres needs postgresql.external.existingSecret (the Secret holding the password, key postgresql.external.passwordKey)" }}
{{- end }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (eq $mode "sqlite") (not $c.enabled) }}
{{- fail "replicaCount > 1 with storage.mode=sqlite: every replica would have its own database; use storage.mode=postgres" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (eq $mode "sqlite") }}
{{- fail "autoscaling.enabled=true with storage.mode=sqlite: SQLite is single-node only; use storage.mode=postgres" }}
{{- end }}
{{- if $d.enabled }}
{{- if not $d.type }}
{{- fail "bifrost.cluster.discovery.enabled=true needs bifrost.cluster.discovery.type (one of kubernetes, dns, static, consul, etcd, udp, mdns)" }}
{{- end }}
{{- if not (has $d.type (list "kubernetes" "dns" "static" "consul" "etcd" "udp" "mdns")) }}
{{- fail (printf "bifrost.cluster.discovery.type: %q is not one of kubernetes, dns, static, consul, etcd, udp, mdns" $d.type) }}
{{- end }}
{{- if and (has $d.type (list "consul" "etcd" "udp")) (not $d.serviceName) }}
{{- fail (printf "bifrost.cluster.discovery.serviceName is required for discovery type %s" $d.type) }}
{{- end }}
{{- if and (eq $d.type "udp") (not (or $d.allowedAddressSpace $c.allowedAddressSpace)) }}
{{- fail "bifrost.cluster.discovery.allowedAddressSpace is required for discovery type udp (the CIDRs announcements may come from)" }}
{{- end }}
{{- if and (eq $d.type "udp") (not (and $d.udpSecret $d.udpBroadcastPort)) }}
{{- fail "bifrost.cluster.discovery.udpSecret and udpBroadcastPort are required for discovery type udp (announcements are signed with the secret; e.g. udpSecret: env.RAINBRIDGE_UDP_SECRET)" }}
{{- end }}
{{- if and (eq $d.type "consul") (not $d.consulAddress) }}
{{- fail "bifrost.cluster.discovery.consulAddress is required for discovery type consul" }}
{{- end }}
{{- if and (eq $d.type "etcd") (not $d.etcdEndpoints) }}
{{- fail "bifrost.cluster.discovery.etcdEndpoints is required for discovery type etcd" }}
{{- end }}
{{- if and (eq $d.type "static") (not $c.peers) }}
{{- fail "bifrost.cluster.discovery.type=static needs bifrost.cluster.peers" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bifrost.discoveryNamespace" -}}
{{- $s := include "bifrost.settings" . | fromJson }}
{{- $d := ($s.cluster | default dict).discovery | default dict }}
{{- default .Release.Namespace $d.k8sNamespace }}
{{- end }}

{{/* snake_case copy of a camelCase map, one level (values untouched). */}}
{{- define "bifrost.snake" -}}
{{- $out := dict }}
{{- range $k, $v := . }}
{{- $_ := set $out ($k | snakecase | replace "k_8s" "k8s") $v }}
{{- end }}
{{- $out | toJson }}
{{- end }}

{{/* config.json: Bifrost's snake_case config built from the camelCase values. */}}
{{- define "bifrost.config" -}}
{{- $s := include "bifrost.settings" . | fromJson }}
{{- $c := $s.cluster | default dict }}
{{- $cfg := dict "version" 2 }}
{{- if $s.encryptionKeySecret }}
{{- $_ := set $cfg "encryption_key" "env.RAINBRIDGE_ENCRYPTION_KEY" }}
{{- end }}
{{- if $s.client }}
{{- $_ := set $cfg "client" (include "bifrost.snake" $s.client | fromJson) }}
{{- end }}
{{- if eq .Values.storage.mode "postgres" }}
{{- $pg := include "bifrost.postgres" . | fromJson }}
{{- $conn := dict "host" $pg.host "port" (int $pg.port) "user" $pg.user "password" "env.RAINBRIDGE_POSTGRES_PASSWORD" "db_name" $pg.database "ssl_mode" $pg.sslMode "max_open_conns" (int $pg.maxOpenConns) "max_idle_conns" (int $pg.maxIdleConns) }}
{{- $_ := set $cfg "config_store" (dict "enabled" true "type" "postgres" "config" $conn) }}
{{- $_ := set $cfg "logs_store" (dict "enabled" true "type" "postgres" "config" (deepCopy $conn)) }}
{{- else }}
{{- $_ := set $cfg "config_store" (dict "enabled" true "type" "sqlite" "config" (dict "path" "/app/data/config.db")) }}
{{- $_ := set $cfg "logs_store" (dict "enabled" true "type" "sqlite" "config" (dict "path" "/app/data/logs.db")) }}
{{- end }}
{{- if $s.plugins }}
{{- $_ := set $cfg "plugins" $s.plugins }}
{{- end }}
{{- if $c.enabled }}
{{- $g := $c.gossip | default dict }}
{{- $gossip := dict "port" (int (default 7946 $g.port)) }}
{{- if $g.config }}
{{- $_ := set $gossip "config" (include "bifrost.snake" $g.config | fromJson) }}
{{- end }}
{{- $cc := dict "enabled" true "node_name" "env.POD_NAME" "gossip" $gossip }}
{{- if $c.region }}
{{- $_ := set $cc "region" $c.region }}
{{- end }}
{{- if $c.peers }}
{{- $_ := set $cc "peers" $c.peers }}
{{- end }}
{{- $d := $c.discovery | default dict }}
{{- $disc := dict }}
{{- if $d.enabled }}
{{- range $k, $v := omit $d "allowedAddressSpace" }}
{{- $_ := set $disc ($k | snakecase | replace "k_8s" "k8s") $v }}
{{- end }}
{{- if eq $d.type "kubernetes" }}
{{- $_ := set $disc "k8s_namespace" (include "bifrost.discoveryNamespace" $) }}
{{- $_ := set $disc "k8s_label_selector" (default (printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" (include "bifrost.name" $) $.Release.Name) $d.k8sLabelSelector) }}
{{- end }}
{{- else if not $c.peers }}
{{- $_ := set $disc "enabled" true }}
{{- $_ := set $disc "type" "dns" }}
{{- $_ := set $disc "dns_names" (list (printf "%s.%s.svc.cluster.local" (include "bifrost.headlessName" .) .Release.Namespace)) }}
{{- end }}
{{- $cidrs := concat ($d.allowedAddressSpace | default list) ($c.allowedAddressSpace | default list) | uniq }}
{{- if $cidrs }}
{{- $_ := set $disc "allowed_address_space" $cidrs }}
{{- end }}
{{- if $disc }}
{{- $_ := set $cc "discovery" $disc }}
{{- end }}
{{- $_ := set $cfg "cluster_config" $cc }}
{{- end }}
{{- $_ := set $cfg "drain" (dict "accept_seconds" .Values.drain.acceptSeconds "grace_seconds" .Values.drain.graceSeconds) }}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy ($s.extraConfig | default dict)) }}
{{- $cfg | toPrettyJson }}
{{- end }}
