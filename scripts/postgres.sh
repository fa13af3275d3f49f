#!/usr/bin/env bash
# Starts (idempotently) a throwaway PostgreSQL 15 on 127.0.0.1:55432 for canopy-store's
# conformance suite (docs/HOST-SETUP.md): data in /var/tmp/canopy-pg, trust auth on loopback,
# role app/app with CREATEDB (the tests create one database each), database app.
#
# Prints the line to export:  CANOPY_TEST_DATABASE_URL=postgres://app:app@127.0.0.1:55432/app
#
# Re-running while the server is up only re-checks the role and database. If the server is not
# running, the data directory is recreated from scratch (nothing in it is worth keeping).
# Needs root (it uses runuser to act as the postgres user): run as a non-root user, it runs
# itself again with sudo (or says that it cannot). Any failure stops it with a message on stderr
# naming what failed.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
trap 'log "error: failed at line $LINENO: $BASH_COMMAND (exit $?)"' ERR

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null \
        || die "must run as root (it acts as the postgres user with runuser), and sudo is not installed: run it as root"
    log "not root: running again with sudo"
    exec sudo PGBIN="${PGBIN:-}" PGDATA="${PGDATA:-}" PGPORT="${PGPORT:-}" "$0" "$@"
fi

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGDATA=${PGDATA:-/var/tmp/canopy-pg}
PGPORT=${PGPORT:-55432}
PGHOST=127.0.0.1

if [ ! -x "$PGBIN/initdb" ]; then
    log "installing postgresql (initdb not found under $PGBIN)"
    command -v apt-get >/dev/null \
        || die "PostgreSQL 15 is not installed ($PGBIN/initdb is missing) and there is no apt-get to install it: install it, or set PGBIN to its bin directory"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    [ -x "$PGBIN/initdb" ] \
        || die "postgresql installed, but $PGBIN/initdb is still missing (another PostgreSQL version?): set PGBIN to its bin directory"
fi

as_pg() { runuser -u postgres -- "$@"; }
psql_admin() { as_pg psql -h "$PGHOST" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

if as_pg "$PGBIN/pg_isready" -h "$PGHOST" -p "$PGPORT" -q 2>/dev/null; then
    log "server already running on $PGHOST:$PGPORT"
else
    # Stop a half-started server of ours before wiping its directory.
    if [ -f "$PGDATA/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PGDATA"
    install -d -o postgres -g postgres "$PGDATA"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
        -o "-c listen_addresses=$PGHOST -p $PGPORT -c unix_socket_directories=/tmp -c max_connections=200 -c fsync=off" \
        start >/dev/null
    log "started PostgreSQL on $PGHOST:$PGPORT (data $PGDATA, log $PGDATA/server.log)"
fi

# CREATE ROLE and CREATE DATABASE must be separate -c calls (no transaction block).
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'app'")" != "1" ]; then
    psql_admin -c "CREATE ROLE app LOGIN PASSWORD 'app' CREATEDB"
else
    psql_admin -c "ALTER ROLE app LOGIN PASSWORD 'app' CREATEDB"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'app'")" != "1" ]; then
    psql_admin -c "CREATE DATABASE app OWNER app"
fi

echo "CANOPY_TEST_DATABASE_URL=postgres://app:app@$PGHOST:$PGPORT/app"
