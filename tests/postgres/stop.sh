#!/usr/bin/env bash
# Stops the server tests/postgres/start.sh started in DIR and removes its files.
set -Eeuo pipefail
DIR=$1
[[ -d "$DIR/data" ]] || exit 0
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
RUN=(); [[ $(id -u) == 0 ]] && RUN=(runuser -u postgres --)
"${RUN[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
rm -rf "$DIR"
