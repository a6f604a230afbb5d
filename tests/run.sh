#!/usr/bin/env bash
# The test command: unit and in-process tests, the container images built from the shipped
# Dockerfiles, then the end-to-end suite on a real local control plane (etcd, kube-apiserver,
# controller-manager, scheduler, kwok), a real node (containerd, kubelet, kube-proxy, CoreDNS) that
# runs those images, Envoy Gateway (its control plane and Envoy as pods on that node) and
# Prometheus. Runs as root (the real node: containerd, iptables, cgroups).
# Everything it needs is built or installed by the project's own scripts; caches live in
# ~/.cache/modelrollout (override with MODELROLLOUT_CACHE).
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
START=$SECONDS
phase() { printf '\n\033[1m== %s (%ds)\033[0m\n' "$*" $((SECONDS - START)); }

phase "Python environment (model toolchain, ONNX Runtime library)"
eval "$(bash scripts/python-env.sh)"

phase "Debian tools the tests call (lua5.4 runs the Argo CD health check; promtool checks the alert rules)"
bash scripts/debian-packages.sh lua5.4 prometheus

phase "control-plane binaries"
eval "$(bash tests/cluster/build.sh | grep -E '^BIN=')"

phase "Helm chart: lint and template (defaults and every option on)"
"$BIN/helm" lint --strict charts/modelrollout
"$BIN/helm" template modelrollout charts/modelrollout >/dev/null
"$BIN/helm" template modelrollout charts/modelrollout --namespace modelrollout-system \
  --set replicas=2,metrics.serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true \
  --set argocdHealthCheck.enabled=true --set 'watchNamespaces={team-a,team-b}' >/dev/null
# The alerts' PromQL, checked by Prometheus's own promtool (the PrometheusRule's spec is a rules file).
RULES=$(mktemp --suffix .yaml)
"$BIN/helm" template modelrollout charts/modelrollout --set prometheusRule.enabled=true \
  --show-only templates/prometheusrule.yaml | sed -n '/^spec:/,$p' | sed '1d; s/^  //' >"$RULES"
promtool check rules "$RULES"
rm -f "$RULES"

phase "cargo build"
cargo build --workspace --all-targets --locked
# The end-to-end sidecars serve live traffic whose latency is gated: run the optimised build.
cargo build --release --locked -p inference-sidecar

phase "unit and in-process tests"
# The S3-compatible server the sidecar's s3:// tests download from (versitygw, from its Go module).
eval "$(bash tests/s3/build.sh | grep -E '^VERSITYGW=')"
export MODELROLLOUT_VERSITYGW=$VERSITYGW
cargo test --workspace --locked --exclude modelrollout-e2e -- --include-ignored

phase "the sidecar built with --features cuda: CUDA asked for, no CUDA provider here, falls back to CPU"
# The GPU side of this (a real H100, and a GPU the process cannot see) is benches/gpu.sh.
cargo test --locked -p inference-sidecar --features cuda --test process -- --include-ignored cuda_requested

phase "cluster.sh up ends on SIGTERM, its processes gone"
UP_LOG=$(mktemp)
bash tests/cluster/cluster.sh up >"$UP_LOG" 2>&1 &
UP=$!
for _ in $(seq 300); do grep -q "control plane ready" "$UP_LOG" && break; kill -0 "$UP" || break; sleep 0.5; done
grep -q "control plane ready" "$UP_LOG" || { cat "$UP_LOG"; echo "cluster.sh up did not come up" >&2; exit 1; }
UP_DIR=$(sed -n 's/.*source \(.*\)\/env.*/\1/p' "$UP_LOG" | head -1)
kill -TERM "$UP"
for _ in $(seq 60); do kill -0 "$UP" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$UP" 2>/dev/null; then cat "$UP_LOG"; echo "cluster.sh up still running 30 s after SIGTERM" >&2; exit 1; fi
[[ -z $UP_DIR || ! -d $UP_DIR ]] || { echo "cluster.sh left $UP_DIR behind" >&2; exit 1; }
echo "cluster.sh up exited on SIGTERM and removed its directory"
rm -f "$UP_LOG"

phase "container images from the shipped Dockerfiles (buildah, base images made from Debian packages)"
bash scripts/build-images.sh --sizes

phase "real-node binaries (kubelet, kube-proxy, containerd, runc, CoreDNS)"
bash tests/node/build.sh >/dev/null
# (Envoy Gateway and Envoy: tests/gateway/build.sh, run by build-images.sh above.)

phase "a SIGKILLed real-node run: the next run reclaims its pods' mounts, rules, bridge and cgroups"
# A run killed outright (a CI timeout, a session's hard end) cannot tear its node down; the next
# real-node run must not be blocked by what it left.
UP_LOG=$(mktemp)
MODELROLLOUT_REAL_NODE=1 MODELROLLOUT_WITH_GATEWAY=0 bash tests/cluster/cluster.sh up >"$UP_LOG" 2>&1 &
UP=$!
for _ in $(seq 600); do grep -q "control plane ready" "$UP_LOG" && break; kill -0 "$UP" || break; sleep 0.5; done
grep -q "control plane ready" "$UP_LOG" || { cat "$UP_LOG"; echo "cluster.sh up (real node) did not come up" >&2; exit 1; }
UP_DIR=$(sed -n 's/.*source \(.*\)\/env.*/\1/p' "$UP_LOG" | head -1)
KUBECONFIG="$UP_DIR/kubeconfig" "$BIN/kubectl" run reclaim-probe --image=localhost/modelrollout/pause:1 \
  --overrides='{"spec":{"nodeName":"real-node-0","tolerations":[{"operator":"Exists"}]}}' >/dev/null
KUBECONFIG="$UP_DIR/kubeconfig" "$BIN/kubectl" wait --for=condition=Ready pod/reclaim-probe --timeout=120s
kill -KILL "$UP"
for _ in $(seq 60); do kill -0 "$UP" 2>/dev/null || break; sleep 0.5; done
LEFTOVERS='source tests/node/node.sh && NODE_BIN=$(bash tests/node/build.sh 2>/dev/null | sed -n "s/^NODE_BIN=//p") && node_leftovers'
if bash -c "$LEFTOVERS" >/dev/null; then echo "the SIGKILLed run left nothing: this check would prove nothing" >&2; exit 1; fi
RECLAIM_LOG=$(mktemp)
MODELROLLOUT_REAL_NODE=1 MODELROLLOUT_WITH_GATEWAY=0 bash tests/cluster/cluster.sh run -- true >"$RECLAIM_LOG" 2>&1 \
  || { cat "$RECLAIM_LOG"; echo "the run after a SIGKILLed one failed" >&2; exit 1; }
grep "reclaiming a dead run's real node ($UP_DIR)" "$RECLAIM_LOG" || { cat "$RECLAIM_LOG"; echo "no reclaim of $UP_DIR" >&2; exit 1; }
bash -c "$LEFTOVERS" || { echo "the above is left after reclaiming and a clean run" >&2; exit 1; }
[[ ! -d $UP_DIR ]] || { echo "the dead run's $UP_DIR is still there" >&2; exit 1; }
rm -f "$UP_LOG" "$RECLAIM_LOG"

phase "end-to-end tests on the local control plane, its real node and Gateway"
# kwok's suites first (their sidecars are local processes), then the real node's (real pods, two
# at a time: each runs several containers on this machine's cores), then real traffic through
# Envoy Gateway and kube-proxy (the figures measured at the client print as GATEWAY_*/RATIO_*), and
# A/B experiments through Envoy Gateway.
MODELROLLOUT_REAL_NODE=1 bash tests/cluster/cluster.sh run -- bash -c '
  set -e
  cargo test --locked -p modelrollout-e2e --test smoke --test rollout --test outage --test operator -- --include-ignored --test-threads 4
  cargo test --locked -p modelrollout-e2e --test node -- --include-ignored --test-threads 2 --nocapture
  cargo test --locked -p modelrollout-e2e --test gateway -- --include-ignored --test-threads 2 --nocapture
  cargo test --locked -p modelrollout-e2e --test experiment -- --include-ignored --test-threads 2 --nocapture
'

phase "the real node left nothing behind"
bash -c "$LEFTOVERS" \
  || { echo "the real node left the above behind" >&2; exit 1; }

phase "all tests passed"
