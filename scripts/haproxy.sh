#!/usr/bin/env bash
# Installs HAProxy (the Debian package) if it is missing, for the multi-replica tests
# (crates/canopy/tests/replicas.rs start it themselves, with a generated configuration on an
# ephemeral port: nothing is started here).
#
# Prints the line to export:  CANOPY_TEST_HAPROXY=/usr/sbin/haproxy
#
# Needs root to install (as a non-root user it runs itself again with sudo, or says that it
# cannot). Any failure stops it with a message on stderr naming what failed.
set -euo pipefail

log() { echo "haproxy.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
trap 'log "error: failed at line $LINENO: $BASH_COMMAND (exit $?)"' ERR

HAPROXY=${HAPROXY:-/usr/sbin/haproxy}

if [ ! -x "$HAPROXY" ]; then
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null \
            || die "HAProxy is not installed ($HAPROXY is missing), installing it needs root, and sudo is not installed: run it as root"
        log "not root: running again with sudo"
        exec sudo HAPROXY="$HAPROXY" "$0" "$@"
    fi
    log "installing haproxy ($HAPROXY not found)"
    command -v apt-get >/dev/null \
        || die "HAProxy is not installed ($HAPROXY is missing) and there is no apt-get to install it: install it, or set HAPROXY to its path"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq haproxy >&2
    [ -x "$HAPROXY" ] || die "haproxy installed, but $HAPROXY is still missing: set HAPROXY to its path"
fi

# The package's service is not wanted (no systemd here anyway): the tests run their own.
# A binary that is present but does not run (seen once on a fresh CI machine: the file was
# there, `-v` failed) is reinstalled with its libraries when we can; otherwise the error says
# what it printed and which libraries it misses.
if ! out=$("$HAPROXY" -v 2>&1); then
    log "$HAPROXY -v failed: $out"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "reinstalling haproxy and its libraries"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --reinstall haproxy >&2
        out=$("$HAPROXY" -v 2>&1) \
            || die "$HAPROXY -v still fails after reinstalling: $out; missing libraries: $(ldd "$HAPROXY" 2>&1 | grep 'not found' || echo none)"
    else
        die "$HAPROXY does not run (missing libraries: $(ldd "$HAPROXY" 2>&1 | grep 'not found' || echo none)); reinstall haproxy as root, or set HAPROXY to a working binary"
    fi
fi
log "${out%%$'\n'*}"
echo "CANOPY_TEST_HAPROXY=$HAPROXY"
