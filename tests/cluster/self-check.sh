#!/usr/bin/env bash
# The local cluster's own checks, run by tests/run.sh around the end-to-end suites:
#   tests/cluster/self-check.sh sigterm     cluster.sh up ends on SIGTERM, its processes and directory gone
#   tests/cluster/self-check.sh reclaim     a SIGKILLed real-node run (a CI timeout, a session's hard
#                                           end) is reclaimed by the next run: pods' mounts, rules,
#                                           bridge and cgroups
#   tests/cluster/self-check.sh leftovers   the real node left nothing behind
# Needs BIN (the control-plane binaries: tests/cluster/build.sh) in the environment; runs as root.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
: "${BIN:?BIN (from tests/cluster/build.sh) must be set}"
LEFTOVERS='source tests/node/node.sh && NODE_BIN=$(bash tests/node/build.sh 2>/dev/null | sed -n "s/^NODE_BIN=//p") && node_leftovers'

sigterm() {
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
}

reclaim() {
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
  if bash -c "$LEFTOVERS" >/dev/null; then echo "the SIGKILLed run left nothing: this check would prove nothing" >&2; exit 1; fi
  RECLAIM_LOG=$(mktemp)
  MODELROLLOUT_REAL_NODE=1 MODELROLLOUT_WITH_GATEWAY=0 bash tests/cluster/cluster.sh run -- true >"$RECLAIM_LOG" 2>&1 \
    || { cat "$RECLAIM_LOG"; echo "the run after a SIGKILLed one failed" >&2; exit 1; }
  grep "reclaiming a dead run's real node ($UP_DIR)" "$RECLAIM_LOG" || { cat "$RECLAIM_LOG"; echo "no reclaim of $UP_DIR" >&2; exit 1; }
  bash -c "$LEFTOVERS" || { echo "the above is left after reclaiming and a clean run" >&2; exit 1; }
  [[ ! -d $UP_DIR ]] || { echo "the dead run's $UP_DIR is still there" >&2; exit 1; }
  rm -f "$UP_LOG" "$RECLAIM_LOG"
}

leftovers() {
  bash -c "$LEFTOVERS" || { echo "the real node left the above behind" >&2; exit 1; }
}

case ${1:-} in
  sigterm | reclaim | leftovers) "$1" ;;
  *) echo "usage: $0 sigterm|reclaim|leftovers" >&2; exit 2 ;;
esac
