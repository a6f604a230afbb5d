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
  go_install_one "$BIN" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
echo "VERSITYGW=$BIN/versitygw"
