#!/usr/bin/env bash
# Builds versitygw (Versity's S3 gateway: S3 over a local directory) from its Go module, the
# S3-compatible server the sidecar's s3:// tests download models from. Prints VERSITYGW=<binary>.
# Env: MODELROLLOUT_CACHE (default ~/.cache/modelrollout).
set -Eeuo pipefail
source "$(dirname "$0")/../lib.sh"
VERSITYGW_VERSION=v1.8.0
BIN="$CACHE/bin/versitygw-$VERSITYGW_VERSION"
if [[ ! -x "$BIN/versitygw" ]]; then
  go_build tests/s3/build.sh
  CURRENT_STEP="go install versitygw $VERSITYGW_VERSION"; step "$CURRENT_STEP (about 2 minutes cold)"
  gobin=$(mktemp -d)
  (cd /tmp && CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath -ldflags "-s -w" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
  mkdir -p "$BIN"
  mv "$gobin/versitygw" "$BIN/versitygw"
  rmdir "$gobin"
fi
echo "VERSITYGW=$BIN/versitygw"
