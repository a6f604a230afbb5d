#!/usr/bin/env bash
# Regenerates models/ with the pinned Python environment.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/python-env.sh)"
"$MODELROLLOUT_PYTHON" scripts/make_models.py models
