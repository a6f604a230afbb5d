#!/usr/bin/env bash
# Builds what a real node of the local cluster runs, from Go modules, into a cache outside the repo
# keyed by version (a second run takes seconds), and installs the Debian packages it needs:
#   kubelet, kube-proxy     k8s.io/kubernetes, through the same wrapper module as the control plane
#   containerd 2.x          github.com/containerd/containerd/v2 (containerd, the runc shim, ctr)
#   runc 1.4                github.com/opencontainers/runc, with seccomp (CGO)
#   CoreDNS                 github.com/coredns/coredns
#   pause                   a static C program (pause(), reaping children), the sandbox image's binary
# Debian: the CNI plugins (bridge, host-local, loopback, portmap), iptables, conntrack, buildah
# (images, scripts/build-images.sh), debootstrap (base layers), libseccomp-dev and pkg-config (runc).
#
#   tests/node/build.sh      build whatever is missing; prints NODE_BIN=<dir> on its last line
#
# Env: MODELROLLOUT_CACHE (default ~/.cache/modelrollout); versions below.
set -Eeuo pipefail
source "$(dirname "$0")/../lib.sh"
go_build tests/node/build.sh

K8S_VERSION=${K8S_VERSION:-v1.36.4}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
RUNC_VERSION=${RUNC_VERSION:-v1.4.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}

NODE_BIN="$CACHE/bin/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-coredns-$COREDNS_VERSION"
WORK="$CACHE/gowork"
mkdir -p "$NODE_BIN" "$WORK"


CURRENT_STEP="Debian packages"
bash "$ROOT/scripts/debian-packages.sh" containernetworking-plugins iptables conntrack buildah \
  debootstrap libseccomp-dev pkg-config gcc libc6-dev uidmap >&2

# --- kubelet, kube-proxy: the control plane's wrapper module (tests/cluster/build.sh makes it) ----
build_kubernetes_node() {
  [[ -x "$NODE_BIN/kubelet" && -x "$NODE_BIN/kube-proxy" ]] && return 0
  local dir="$WORK/kubernetes-$K8S_VERSION"
  [[ -f "$dir/go.mod" ]] || { CURRENT_STEP="control-plane build (makes the wrapper module)"; bash "$ROOT/tests/cluster/build.sh" >/dev/null; }
  local major minor ld="-s -w"
  major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
  minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for c in kubelet kube-proxy; do
    [[ -x "$NODE_BIN/$c" ]] && continue
    CURRENT_STEP="go build $c $K8S_VERSION"; step "$CURRENT_STEP"
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$NODE_BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$NODE_BIN/$c.tmp" "$NODE_BIN/$c"
  done
}

build_containerd() {
  [[ -x "$NODE_BIN/containerd" && -x "$NODE_BIN/containerd-shim-runc-v2" && -x "$NODE_BIN/ctr" ]] && return 0
  CURRENT_STEP="go install containerd $CONTAINERD_VERSION"; step "$CURRENT_STEP (cold: about 2 min)"
  local gobin="$WORK/gobin-containerd"
  local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "$ld" \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
  for c in containerd containerd-shim-runc-v2 ctr; do mv "$gobin/$c" "$NODE_BIN/$c"; done
}

build_runc() {
  [[ -x "$NODE_BIN/runc" ]] && return 0
  CURRENT_STEP="go install runc $RUNC_VERSION"; step "$CURRENT_STEP"
  local gobin="$WORK/gobin-runc"
  GOBIN="$gobin" CGO_ENABLED=1 go install -trimpath -tags seccomp \
    -ldflags "-X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
  mv "$gobin/runc" "$NODE_BIN/runc"
}

build_coredns() {
  [[ -x "$NODE_BIN/coredns" ]] && return 0
  CURRENT_STEP="go install coredns $COREDNS_VERSION"; step "$CURRENT_STEP"
  local gobin="$WORK/gobin-coredns"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  mv "$gobin/coredns" "$NODE_BIN/coredns"
}

build_pause() {
  [[ -x "$NODE_BIN/pause" ]] && return 0
  CURRENT_STEP="gcc -static pause"; step "$CURRENT_STEP"
  gcc -static -O2 -o "$NODE_BIN/pause.tmp" -x c - <<'C'
/* The pod sandbox's process: sleeps until told to stop and reaps any child re-parented to it. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction s = {0};
  s.sa_handler = stop; sigaction(SIGINT, &s, NULL); sigaction(SIGTERM, &s, NULL);
  s.sa_handler = reap; s.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &s, NULL);
  for (;;) pause();
}
C
  mv "$NODE_BIN/pause.tmp" "$NODE_BIN/pause"
}

build_pause
build_runc
build_containerd
build_kubernetes_node
build_coredns
CURRENT_STEP=verify
for c in kubelet kube-proxy containerd containerd-shim-runc-v2 ctr runc coredns pause; do
  [[ -x "$NODE_BIN/$c" ]] || { echo "node/build.sh: $NODE_BIN/$c missing after build" >&2; exit 1; }
done
step "node binaries ready in $NODE_BIN ($(( $(date +%s) - START ))s)"
echo "NODE_BIN=$NODE_BIN"
