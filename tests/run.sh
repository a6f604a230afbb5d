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
# No incremental caches: every run builds from a fresh clone, and they grew the shared target dir
# by ~20 GB (a disk that filled failed CI twice).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
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
  --set argocdHealthCheck.enabled=true --set 'watchNamespaces={team-a,team-b}' \
  --set 'outbound.allow={10.0.0.0/8,hooks.example.com}' >/dev/null
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
# The PostgreSQL server the evidence store's tests run against beside SQLite (Debian's package).
eval "$(bash tests/postgres/start.sh)"
trap 'bash tests/postgres/stop.sh "$POSTGRES_DIR"' EXIT
export MODELROLLOUT_POSTGRES_URL=$POSTGRES_URL
cargo test --workspace --locked --exclude modelrollout-e2e -- --include-ignored
bash tests/postgres/stop.sh "$POSTGRES_DIR"
trap - EXIT

phase "the sidecar built with --features cuda: CUDA asked for, no CUDA provider here, falls back to CPU"
# The GPU side of this (a real H100, and a GPU the process cannot see) is benches/gpu.sh.
cargo test --locked -p inference-sidecar --features cuda --test process -- --include-ignored cuda_requested

phase "cluster.sh up ends on SIGTERM, its processes gone"
BIN=$BIN bash tests/cluster/self-check.sh sigterm

phase "container images from the shipped Dockerfiles (buildah, base images made from Debian packages)"
bash scripts/build-images.sh --sizes

phase "real-node binaries (kubelet, kube-proxy, containerd, runc, CoreDNS)"
bash tests/node/build.sh >/dev/null
# (Envoy Gateway and Envoy: tests/gateway/build.sh, run by build-images.sh above.)

phase "a SIGKILLed real-node run: the next run reclaims its pods' mounts, rules, bridge and cgroups"
# A run killed outright (a CI timeout, a session's hard end) cannot tear its node down; the next
# real-node run must not be blocked by what it left.
BIN=$BIN bash tests/cluster/self-check.sh reclaim

phase "end-to-end tests on the local control plane, its real node and Gateway"
# kwok's suites first (their sidecars are local processes), then the real node's (real pods, two
# at a time: each runs several containers on this machine's cores), then real traffic through
# Envoy Gateway and kube-proxy (the figures measured at the client print as GATEWAY_*/RATIO_*),
# undo after a promotion through the Gateway (UNDO_*),
# A/B experiments through Envoy Gateway, and the worked examples' plans (PLAN_*).
MODELROLLOUT_REAL_NODE=1 bash tests/cluster/cluster.sh run -- bash -c '
  set -e
  cargo test --locked -p modelrollout-e2e --test smoke --test rollout --test outage --test operator --test evidence -- --include-ignored --test-threads 4
  cargo test --locked -p modelrollout-e2e --test node -- --include-ignored --test-threads 2 --nocapture
  cargo test --locked -p modelrollout-e2e --test gateway -- --include-ignored --test-threads 2 --nocapture
  cargo test --locked -p modelrollout-e2e --test after_promotion -- --include-ignored --test-threads 2 --nocapture
  cargo test --locked -p modelrollout-e2e --test experiment -- --include-ignored --test-threads 2 --nocapture
  cargo test --locked -p modelrollout-e2e --test plans -- --include-ignored --test-threads 2 --nocapture
'

phase "the real node left nothing behind"
BIN=$BIN bash tests/cluster/self-check.sh leftovers

phase "all tests passed"
