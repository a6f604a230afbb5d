#!/usr/bin/env bash
# Builds versitygw (Versity's S3 gateway: S3 over a local directory) from its Go module, the
# S3-compatible server the sidecar's s3:// tests download models from. Prints VERSITYGW=<binary>.
# Env: MODELROLLOUT_CACHE (default ~/.cache/modelrollout).
set -Eeuo pipefail
VERSITYGW_VERSION=v1.8.0
CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
BIN="$CACHE/bin/versitygw-$VERSITYGW_VERSION"
if [[ ! -x "$BIN/versitygw" ]]; then
  command -v go >/dev/null || { echo "s3/build.sh: go is not installed" >&2; exit 1; }
  printf '\033[1m==> go install versitygw %s (about 2 minutes cold)\033[0m\n' "$VERSITYGW_VERSION" >&2
  gobin=$(mktemp -d)
  (cd /tmp && CGO_ENABLED=0 GOBIN="$gobin" GOFLAGS="${GOFLAGS:-} -mod=mod" go install -trimpath -ldflags "-s -w" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
  mkdir -p "$BIN"
  mv "$gobin/versitygw" "$BIN/versitygw"
  rmdir "$gobin"
fi
echo "VERSITYGW=$BIN/versitygw"
