#!/usr/bin/env bash
# A real, local Kubernetes control plane and Prometheus, started from the binaries build.sh made.
#
#   tests/cluster/cluster.sh up              start, print how to use it, wait; Ctrl-C tears down
#   tests/cluster/cluster.sh run -- CMD...   start, run CMD with the cluster's env, tear down,
#                                            exit with CMD's status
#
# What runs (all on 127.0.0.1, free ports, state in one temp dir):
#   etcd 3.6, kube-apiserver (Node+RBAC, generated CA/serving/client certs, SA keys),
#   kube-controller-manager, kube-scheduler, kwok with one fake node (pods reach Running),
#   Prometheus with file-based service discovery (kwok's pods) and kubernetes_sd (real pods).
# With MODELROLLOUT_REAL_NODE=1 (as root), also a real node, `real-node-0`: containerd + runc,
# the kubelet, kube-proxy, CoreDNS and CNI on a host-only bridge (tests/node/node.sh says how
# nothing leaves the machine). It carries the taint modelrollout.dev/real-node=true:NoSchedule, so
# only pods that tolerate it run there; the images in $MODELROLLOUT_CACHE/images/out
# (scripts/build-images.sh) are imported into its runtime. The apiserver then also listens on the
# node IP (10.42.0.1), for pods; only loopback and the bridge may connect. With the real node comes
# Envoy Gateway (tests/gateway/gateway.sh; MODELROLLOUT_WITH_GATEWAY=0 leaves it out): the
# command then gets MODELROLLOUT_GATEWAY (the Gateway's host:port) and MODELROLLOUT_GATEWAY_REF.
# And metrics-server (tests/metrics-server/build.sh, on the host at the node IP, registered with the
# apiserver's aggregation layer as metrics.k8s.io): the controller-manager's HorizontalPodAutoscaler
# controller reads the real node's pods' CPU from it.
# Installed: the ModelRollout CRD from crds/, Gateway API CRDs, Istio networking CRDs.
#
# The command gets: KUBECONFIG, MODELROLLOUT_REAL_NODE (1 when the real node is up), MODELROLLOUT_PROMETHEUS_URL, MODELROLLOUT_PROM_TARGETS_DIR (drop
# `<name>.json` file_sd target lists there), MODELROLLOUT_CLUSTER_DIR, MODELROLLOUT_BIN, and the
# cluster binaries (kubectl, helm) first on PATH.
#
# Everything is torn down by PID on exit, error, Ctrl-C or TERM; each child also carries a
# parent-death signal, so even a SIGKILLed script leaves nothing running.
set -Eeuo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODE=${1:-}
[[ $MODE == up || $MODE == run ]] || { echo "usage: $0 up | run -- CMD..." >&2; exit 2; }
shift
[[ ${1:-} == -- ]] && shift

log() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# --- binaries -------------------------------------------------------------------------------
eval "$(bash "$HERE/build.sh" | grep -E '^(BIN|CRDS|PROMETHEUS)=')"
[[ -n ${BIN:-} && -x ${PROMETHEUS:-} ]] || die "build.sh did not report its bin dir and Prometheus"
# The pinned kubectl and helm, never whatever else a machine has on PATH.
export PATH="$BIN:$PATH"
command -v openssl >/dev/null || die "openssl is required"
REAL_NODE=${MODELROLLOUT_REAL_NODE:-0}
if [[ $REAL_NODE == 1 ]]; then
  [[ $(id -u) == 0 ]] || die "MODELROLLOUT_REAL_NODE=1 needs root (containerd, the kubelet, iptables)"
  eval "$(bash "$ROOT/tests/node/build.sh" | grep -E '^NODE_BIN=')"
  [[ -n ${NODE_BIN:-} ]] || die "tests/node/build.sh did not report its bin dir"
  # shellcheck source=../node/node.sh
  source "$ROOT/tests/node/node.sh"
  # shellcheck source=../gateway/gateway.sh
  source "$ROOT/tests/gateway/gateway.sh"
fi
WITH_GATEWAY=${MODELROLLOUT_WITH_GATEWAY:-$REAL_NODE}
[[ $WITH_GATEWAY == 0 || $REAL_NODE == 1 ]] || die "MODELROLLOUT_WITH_GATEWAY=1 needs the real node (MODELROLLOUT_REAL_NODE=1)"

# A real node's leftovers (a SIGKILLed run could not tear its node down) would break this run:
# reclaim them, then check that nothing is left.
if [[ $REAL_NODE == 1 ]] && ! left=$(node_leftovers); then
  log "a previous real-node run left behind: $(echo "$left" | paste -sd, -)"
  node_reclaim
  left=$(node_leftovers) || die "still left behind after reclaiming: $(echo "$left" | paste -sd, -)"
fi
# A run that was SIGKILLed could not remove its temp dir (its processes died with it): clean those up.
# A dead real-node run's dir keeps its pods' mounts until a real-node run reclaims them (above).
for old in "${TMPDIR:-/tmp}"/modelrollout-cluster.*; do
  [[ -f $old/owner.pid ]] && ! kill -0 "$(cat "$old/owner.pid")" 2>/dev/null || continue
  rm -rf "$old" 2>/dev/null || log "left $old: a dead real-node run's mounts (the next real-node run reclaims them)"
done
DIR=$(mktemp -d "${TMPDIR:-/tmp}/modelrollout-cluster.XXXXXX")
echo $$ >"$DIR/owner.pid"
PIDS=()
teardown() {
  local code=$?
  trap - EXIT INT TERM
  # Teardown does what it can: one failed step must not leave the rest behind.
  set +e
  # A reader of our output (a pipe into tee) may be gone after Ctrl-C: never die mid-teardown.
  trap '' PIPE INT
  # The real node first: its pods, rules, mounts and cgroups (it stops its own processes).
  [[ $REAL_NODE == 1 ]] && node_down
  # Tests may restart a component (Prometheus) and record its new PID in $DIR/<name>.pid.
  for f in "$DIR"/*.pid; do
    [[ -f $f ]] || continue
    p=$(cat "$f"); [[ $p =~ ^[0-9]+$ ]] && [[ " ${PIDS[*]} " != *" $p "* ]] && [[ $p != $$ ]] && PIDS+=("$p")
  done
  if ((${#PIDS[@]})); then
    log "tearing down (pids ${PIDS[*]})"
    # Reverse order: kwok, scheduler, controller-manager, apiserver, etcd, prometheus.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
    for _ in $(seq 50); do
      local alive=0
      for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.2
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
  # `up` waits on a sleep of its own: end it, or teardown's exit waits for it.
  [[ -n ${SLEEPER:-} ]] && kill "$SLEEPER" 2>/dev/null
  # A kept dir loses its owner.pid, so the next start's clean-up of dead runs leaves it alone.
  if [[ -n ${KEEP_CLUSTER_DIR:-} ]]; then rm -f "$DIR/owner.pid"; log "kept $DIR"; else rm -rf "$DIR"; fi
  exit "$code"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME CMD...: runs CMD in the background, logs to $DIR/logs/NAME.log, remembers the PID.
# setpriv's parent-death signal kills the child if this script dies without running its trap.
start() {
  local name=$1; shift
  mkdir -p "$DIR/logs"
  setpriv --pdeathsig KILL -- "$@" >"$DIR/logs/$name.log" 2>&1 &
  PIDS+=($!)
  echo "$!" >"$DIR/$name.pid"
}

# wait_for WHAT TIMEOUT CMD...: polls CMD until it succeeds; on timeout shows the component's log.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { tail -n 30 "$DIR/logs/$what.log" >&2 2>/dev/null || true; die "$what not ready after ${timeout}s"; }
    sleep 0.3
  done
}

# --- certificates ---------------------------------------------------------------------------
PKI="$DIR/pki"; mkdir -p "$PKI"
(
  cd "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=modelrollout-test-ca" -keyout ca.key -out ca.crt
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr
  printf 'subjectAltName=IP:127.0.0.1,IP:10.42.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' > apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile apiserver.ext -out apiserver.crt
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=admin" -keyout admin.key -out admin.csr
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out admin.crt
  # The aggregation layer's client (the apiserver proxying to metrics-server).
  openssl req -newkey rsa:2048 -nodes -subj "/CN=front-proxy-client" -keyout front-proxy-client.key -out front-proxy-client.csr
  openssl x509 -req -in front-proxy-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out front-proxy-client.crt
  openssl genrsa -out sa.key 2048
  openssl rsa -in sa.key -pubout -out sa.pub
) >/dev/null 2>&1 || die "certificate generation failed"

# --- etcd -----------------------------------------------------------------------------------
ETCD_PORT=$(free_port); ETCD_PEER=$(free_port)
log "starting etcd on 127.0.0.1:$ETCD_PORT"
start etcd "$BIN/etcd" --name default --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER" --unsafe-no-fsync --quota-backend-bytes 4294967296
wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver -------------------------------------------------------------------------
API_PORT=$(free_port)
PROM_PORT=$(free_port)
PROM_LISTEN=127.0.0.1
API_ADDRESSES=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1)
if [[ $REAL_NODE == 1 ]]; then
  NODE_KUBELET_PORT=$(free_port); NODE_KUBELET_HEALTHZ_PORT=$(free_port); NODE_PROXY_HEALTHZ_PORT=$(free_port)
  NODE_DNS_HEALTH_PORT=$(free_port); NODE_DNS_READY_PORT=$(free_port)
  log "real node: bridge $NODE_BRIDGE, routes and the no-egress rule, before anything starts"
  node_net_up
  # Pods reach the apiserver at the node IP (the kubernetes Service's endpoint), and Prometheus
  # there too (Service monitoring/prometheus).
  PROM_LISTEN=0.0.0.0
  API_ADDRESSES=(--bind-address 0.0.0.0 --advertise-address "$NODE_IP" --kubelet-preferred-address-types InternalIP
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key")
fi
log "starting kube-apiserver on https://127.0.0.1:$API_PORT"
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" --cert-dir "$PKI" \
  --secure-port "$API_PORT" "${API_ADDRESSES[@]}" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" --authorization-mode Node,RBAC \
  --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
  --service-account-issuer "https://127.0.0.1:$API_PORT" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --requestheader-client-ca-file "$PKI/ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- --enable-aggregator-routing=true \
  --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key"
KUBECONFIG="$DIR/kubeconfig"
cat >"$KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters:
- name: modelrollout-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: modelrollout-test
  context: {cluster: modelrollout-test, user: admin, namespace: default}
current-context: modelrollout-test
KC
export KUBECONFIG
wait_for kube-apiserver 120 curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
  "https://127.0.0.1:$API_PORT/readyz"

# --- controller-manager, scheduler ----------------------------------------------------------
# The controller-manager's client is raised from 20 requests/s (its default) to 500: at 20 it needs
# minutes to create the ReplicaSets, pods and EndpointSlices of 1,000 rollouts, and a scale
# benchmark would measure its queue instead of ours.
log "starting kube-controller-manager and kube-scheduler"
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false \
  --kube-api-qps 500 --kube-api-burst 1000 \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --use-service-account-credentials=false --controllers '*,-nodeipam,-cloud-node-lifecycle'
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false

# --- kwok and its fake node -----------------------------------------------------------------
KWOK_CONFIG="$DIR/kwok.yaml"
: >"$KWOK_CONFIG"
for f in "$BIN"/kwok-stages/*.yaml; do cat "$f" >>"$KWOK_CONFIG"; printf '\n---\n' >>"$KWOK_CONFIG"; done
log "starting kwok"
start kwok "$BIN/kwok" --kubeconfig "$KUBECONFIG" --config "$KWOK_CONFIG" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds 40 --cidr 10.244.0.0/16 --node-ip 10.244.0.1 \
  --server-address "127.0.0.1:$(free_port)"
kubectl apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "50000", nvidia.com/gpu: "8"}
  capacity: {cpu: "64", memory: 256Gi, pods: "50000", nvidia.com/gpu: "8"}
NODE
wait_for kwok 60 bash -c "kubectl get node kwok-node-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"

# --- CRDs -----------------------------------------------------------------------------------
log "installing CRDs (modelrollout, Gateway API${ISTIO_NOTE:-}, Istio networking)"
kubectl apply --server-side -f "$ROOT/crds/" >/dev/null || die "applying crds/ failed"
kubectl apply --server-side -f "$CRDS/gateway-api.yaml" >/dev/null || die "applying Gateway API CRDs failed"
if [[ -f "$CRDS/istio-networking.yaml" ]]; then
  kubectl apply --server-side -f "$CRDS/istio-networking.yaml" >/dev/null || die "applying Istio CRDs failed"
fi
kubectl wait --for condition=Established --timeout 60s crd --all >/dev/null || die "CRDs not established"

# --- Prometheus -----------------------------------------------------------------------------
TARGETS="$DIR/prometheus/targets"; mkdir -p "$TARGETS" "$DIR/prometheus/rules"
cat >"$DIR/prometheus/prometheus.yml" <<PROM
global:
  scrape_interval: 1s
  evaluation_interval: 1s
# Alerting rules the tests write (an alert-free window's alert) and load with SIGHUP (no lifecycle
# API: in real-node mode Prometheus listens where pods can reach it).
rule_files: ["$DIR/prometheus/rules/*.yml"]
scrape_configs:
  # kwok's pods run no containers: the tests start their sidecars on 127.0.0.1 and list them here.
  - job_name: sidecars
    scrape_interval: 1s
    scrape_timeout: 900ms
    file_sd_configs:
      - files: ["$TARGETS/*.json"]
        refresh_interval: 1s
  # Real pods are found the way a user's Prometheus finds them: the pod role and the usual
  # prometheus.io annotations, with namespace and pod as labels. The evidence service's series
  # carry each rollout's namespace: the scraped labels win (as its chart's ServiceMonitor says).
  - job_name: pods
    scrape_interval: 1s
    scrape_timeout: 900ms
    honor_labels: true
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: $KUBECONFIG
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: "true"
      - source_labels: [__meta_kubernetes_pod_node_name]
        action: drop
        regex: kwok-.*
      - source_labels: [__meta_kubernetes_pod_phase]
        action: keep
        regex: Running
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
        action: replace
        regex: ([^:]+)(?::\d+)?;(\d+)
        replacement: \$1:\$2
        target_label: __address__
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_label_modelrollout_dev_rollout]
        target_label: rollout
PROM
# The exact command, so tests can stop Prometheus and start it again on the same port and data.
PROM_CMD=("$PROMETHEUS" --config.file "$DIR/prometheus/prometheus.yml" --storage.tsdb.path "$DIR/prometheus/data"
  --web.listen-address "$PROM_LISTEN:$PROM_PORT" --storage.tsdb.retention.time 2h --log.level warn)
printf '%q ' "${PROM_CMD[@]}" >"$DIR/prometheus/command"
log "starting Prometheus on 127.0.0.1:$PROM_PORT"
start prometheus "${PROM_CMD[@]}"
wait_for prometheus 60 curl -sf "http://127.0.0.1:$PROM_PORT/-/ready"

# host_service NS NAME PORT_NAME PORT HOST_PORT: a Service without a selector whose one endpoint is
# a process on the host at the node IP (Prometheus, metrics-server), as YAML for kubectl apply.
host_service() {
  cat <<SVC
apiVersion: v1
kind: Service
metadata: {name: $2, namespace: $1}
spec:
  ports: [{name: $3, port: $4, targetPort: $5}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $2-host
  namespace: $1
  labels: {kubernetes.io/service-name: $2}
addressType: IPv4
ports: [{name: $3, port: $5}]
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
SVC
}

# --- metrics-server ---------------------------------------------------------------------------
# The resource metrics API (metrics.k8s.io) a HorizontalPodAutoscaler reads pods' CPU from, built
# from its Go module and run on the host beside the apiserver (like Prometheus): it reads the real
# node's kubelet (/metrics/resource) at the node IP, and the apiserver's aggregation layer reaches
# it through a selectorless Service whose one endpoint is the node IP.
metrics_server_up() {
  local port bin
  bin=$(bash "$ROOT/tests/metrics-server/build.sh" | sed -n 's/^METRICS_SERVER=//p')
  [[ -x $bin ]] || die "tests/metrics-server/build.sh did not report its binary"
  port=$(free_port)
  log "starting metrics-server on $NODE_IP:$port (the aggregated metrics.k8s.io API)"
  start metrics-server "$bin" --kubeconfig "$KUBECONFIG" \
    --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
    --bind-address "$NODE_IP" --secure-port "$port" --cert-dir "$DIR/metrics-server" \
    --kubelet-insecure-tls --kubelet-preferred-address-types InternalIP --kubelet-use-node-status-port \
    --metric-resolution 10s --kubelet-request-timeout 5s
  kubectl apply --server-side -f - >/dev/null <<MS || die "the metrics-server Service and APIService"
$(host_service kube-system metrics-server https 443 "$port")
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: metrics-server, namespace: kube-system, port: 443}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
MS
  wait_for metrics-server 120 bash -c "kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes/$NODE_NAME"
}

# --- the real node ---------------------------------------------------------------------------
if [[ $REAL_NODE == 1 ]]; then
  IMAGES=()
  for tar in "${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}"/images/out/*.tar; do [[ -f $tar ]] && IMAGES+=("$tar"); done
  ((${#IMAGES[@]})) || log "warning: no images in \$MODELROLLOUT_CACHE/images/out (bash scripts/build-images.sh makes them)"
  node_up "${IMAGES[@]}"
  # Pods find Prometheus the way they would in a cluster: a Service (here without a selector, its
  # one endpoint the host's Prometheus at the node IP).
  kubectl apply --server-side -f - >/dev/null <<PROMSVC || die "the monitoring/prometheus Service"
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
$(host_service monitoring prometheus web 9090 "$PROM_PORT")
PROMSVC
  export MODELROLLOUT_NODE_BIN="$NODE_BIN"
  metrics_server_up
  if [[ $WITH_GATEWAY == 1 ]]; then gateway_up; fi
fi

export MODELROLLOUT_REAL_NODE="$REAL_NODE"
export MODELROLLOUT_CLUSTER_DIR="$DIR"
export MODELROLLOUT_BIN="$BIN"
export MODELROLLOUT_PROMETHEUS_URL="http://127.0.0.1:$PROM_PORT"
export MODELROLLOUT_PROM_TARGETS_DIR="$TARGETS"
export PATH="$BIN:$PATH"
cat >"$DIR/env" <<ENV
export KUBECONFIG=$KUBECONFIG
export MODELROLLOUT_REAL_NODE=$REAL_NODE
export MODELROLLOUT_NODE_BIN=${NODE_BIN:-}
export MODELROLLOUT_CLUSTER_DIR=$DIR
export MODELROLLOUT_BIN=$BIN
export MODELROLLOUT_PROMETHEUS_URL=$MODELROLLOUT_PROMETHEUS_URL
export MODELROLLOUT_PROM_TARGETS_DIR=$TARGETS
export MODELROLLOUT_GATEWAY=${MODELROLLOUT_GATEWAY:-}
export MODELROLLOUT_GATEWAY_REF=${MODELROLLOUT_GATEWAY_REF:-}
export PATH=$BIN:\$PATH
ENV
log "control plane ready: $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'), node kwok-node-0 Ready"

if [[ $MODE == up ]]; then
  cat >&2 <<MSG

  The local control plane is up. In another shell:

    source $DIR/env
    kubectl get nodes
    kubectl get crd

  Prometheus: $MODELROLLOUT_PROMETHEUS_URL   (scrape targets: drop file_sd JSON into $TARGETS)
  Logs: $DIR/logs/

  Press Ctrl-C to tear everything down.
MSG
  while true; do sleep 3600 & SLEEPER=$!; wait "$SLEEPER"; done
fi

set +e
"$@"
status=$?
set -e
exit "$status"
