#!/usr/bin/env bash
# Creates (once) the project's Python environment outside the repo: the pinned model-building
# toolchain and the ONNX Runtime wheel whose libonnxruntime.so the sidecar loads (ORT_DYLIB_PATH).
# Prints `export` lines for ORT_DYLIB_PATH and MODELROLLOUT_PYTHON on stdout.
set -Eeuo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
REQ="$HERE/requirements.txt"
KEY=$(sha256sum "$REQ" | cut -c1-12)
VENV="$CACHE/venv-$KEY"
if [[ ! -x "$VENV/bin/python" || ! -f "$VENV/.complete" ]]; then
  echo "==> creating Python environment $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
  touch "$VENV/.complete"
fi
ORT=$("$VENV/bin/python" -c 'import onnxruntime, os, glob; d=os.path.join(os.path.dirname(onnxruntime.__file__), "capi"); print(sorted(glob.glob(d + "/libonnxruntime.so*"))[-1])')
echo "export MODELROLLOUT_PYTHON=$VENV/bin/python"
echo "export ORT_DYLIB_PATH=$ORT"
