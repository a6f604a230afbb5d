#!/usr/bin/env bash
# A real, local Kubernetes control plane and Prometheus, started from the binaries build.sh made.
#
#   tests/cluster/cluster.sh up              start, print how to use it, wait; Ctrl-C tears down
#   tests/cluster/cluster.sh run -- CMD...   start, run CMD with the cluster's env, tear down,
#                                            exit with CMD's status
#
# What runs (all on 127.0.0.1, free ports, state in one temp dir):
#   etcd 3.6, kube-apiserver (RBAC, generated CA/serving/client certs, SA keys),
#   kube-controller-manager, kube-scheduler, kwok with one fake node (pods reach Running),
#   Prometheus with file-based service discovery.
# Installed: the ModelRollout CRD from crds/, Gateway API CRDs, Istio networking CRDs.
#
# The command gets: KUBECONFIG, MODELROLLOUT_PROMETHEUS_URL, MODELROLLOUT_PROM_TARGETS_DIR (drop
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
eval "$(bash "$HERE/build.sh" | grep -E '^(BIN|CRDS)=')"
[[ -n ${BIN:-} ]] || die "build.sh did not report its bin dir"
ensure_prometheus() {
  command -v prometheus >/dev/null && return 0
  log "installing Debian's prometheus package"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >&2 \
    || die "apt-get install prometheus failed"
}
ensure_prometheus
command -v openssl >/dev/null || die "openssl is required"

# A run that was SIGKILLed could not remove its temp dir (its processes died with it): clean those up.
for old in "${TMPDIR:-/tmp}"/modelrollout-cluster.*; do
  [[ -f $old/owner.pid ]] && ! kill -0 "$(cat "$old/owner.pid")" 2>/dev/null && rm -rf "$old"
done
DIR=$(mktemp -d "${TMPDIR:-/tmp}/modelrollout-cluster.XXXXXX")
echo $$ >"$DIR/owner.pid"
PIDS=()
teardown() {
  local code=$?
  trap - EXIT INT TERM
  # A reader of our output (a pipe into tee) may be gone after Ctrl-C: never die mid-teardown.
  trap '' PIPE INT
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
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' > apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile apiserver.ext -out apiserver.crt
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=admin" -keyout admin.key -out admin.csr
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out admin.crt
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
log "starting kube-apiserver on https://127.0.0.1:$API_PORT"
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" --cert-dir "$PKI" \
  --secure-port "$API_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" --authorization-mode RBAC \
  --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
  --service-account-issuer "https://127.0.0.1:$API_PORT" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key"
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
PROM_PORT=$(free_port)
TARGETS="$DIR/prometheus/targets"; mkdir -p "$TARGETS"
cat >"$DIR/prometheus/prometheus.yml" <<PROM
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sidecars
    scrape_interval: 1s
    scrape_timeout: 900ms
    file_sd_configs:
      - files: ["$TARGETS/*.json"]
        refresh_interval: 1s
PROM
# The exact command, so tests can stop Prometheus and start it again on the same port and data.
PROM_CMD=(prometheus --config.file "$DIR/prometheus/prometheus.yml" --storage.tsdb.path "$DIR/prometheus/data"
  --web.listen-address "127.0.0.1:$PROM_PORT" --storage.tsdb.retention.time 2h --log.level warn)
printf '%q ' "${PROM_CMD[@]}" >"$DIR/prometheus/command"
log "starting Prometheus on 127.0.0.1:$PROM_PORT"
start prometheus "${PROM_CMD[@]}"
wait_for prometheus 60 curl -sf "http://127.0.0.1:$PROM_PORT/-/ready"

export MODELROLLOUT_CLUSTER_DIR="$DIR"
export MODELROLLOUT_BIN="$BIN"
export MODELROLLOUT_PROMETHEUS_URL="http://127.0.0.1:$PROM_PORT"
export MODELROLLOUT_PROM_TARGETS_DIR="$TARGETS"
export PATH="$BIN:$PATH"
cat >"$DIR/env" <<ENV
export KUBECONFIG=$KUBECONFIG
export MODELROLLOUT_CLUSTER_DIR=$DIR
export MODELROLLOUT_BIN=$BIN
export MODELROLLOUT_PROMETHEUS_URL=$MODELROLLOUT_PROMETHEUS_URL
export MODELROLLOUT_PROM_TARGETS_DIR=$TARGETS
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
