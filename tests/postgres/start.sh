#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server (Debian's package, installed if missing) for the evidence
# store's tests: a fresh cluster in a temporary directory, listening on 127.0.0.1 only, on a free
# port, trust authentication (loopback, test data only). Prints:
#   POSTGRES_URL=postgres://postgres@127.0.0.1:PORT   POSTGRES_DIR=<data dir, for stop.sh>
set -Eeuo pipefail
source "$(dirname "$0")/../lib.sh"
bash "$ROOT/scripts/debian-packages.sh" postgresql >&2
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[[ -x "$PGBIN/initdb" ]] || { echo "no initdb under /usr/lib/postgresql" >&2; exit 1; }
DIR=$(mktemp -d /tmp/modelrollout-pg.XXXXXX)
chmod 755 "$DIR"
mkdir "$DIR/data"
# PostgreSQL refuses to run as root: the package's postgres user runs it.
RUN=(); [[ $(id -u) == 0 ]] && RUN=(runuser -u postgres --)
[[ $(id -u) == 0 ]] && chown -R postgres "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${RUN[@]}" "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
"${RUN[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
echo "POSTGRES_URL=postgres://postgres@127.0.0.1:$PORT"
echo "POSTGRES_DIR=$DIR"
