# tests/lib.sh: the preamble every build script of the project shares, sourced once:
#   source "$(dirname "$0")/../lib.sh"; go_build tests/node/build.sh
# Gives ROOT (the repository), CACHE (MODELROLLOUT_CACHE, default ~/.cache/modelrollout: outputs
# live outside the repo), START (for "ready in Ns") and step (a progress line on stderr); go_build
# NAME adds what a Go build needs: the failing step named on error (set CURRENT_STEP before each),
# Go required, and modules resolved as their go.mod says.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
START=$(date +%s)
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
go_build() {
  BUILD_NAME=$1
  CURRENT_STEP=init
  trap 'printf "%s: step \"%s\" failed\n" "$BUILD_NAME" "$CURRENT_STEP" >&2' ERR
  command -v go >/dev/null || { echo "$BUILD_NAME: go is not installed (need Go >= 1.26)" >&2; exit 1; }
  export GOFLAGS="${GOFLAGS:-} -mod=mod"
}
# go_install_one DIR PACKAGE@VERSION: one Go program, static and stripped, built outside any module
# (its own go.mod decides its dependencies) and moved into DIR.
go_install_one() {
  local dir=$1 pkg=$2 gobin
  gobin=$(mktemp -d)
  (cd /tmp && CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "$pkg")
  mkdir -p "$dir"
  mv "$gobin"/* "$dir/"
  rmdir "$gobin"
}
