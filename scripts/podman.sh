#!/usr/bin/env bash
# Starts (idempotently) a rootful Podman API service for canopy-agent's container driver tests,
# with the host settings docs/HOST-SETUP.md describes: runc (crun fails on hosts with hybrid
# cgroups), cgroupfs, file events logger and capped ulimits, all through a containers.conf of
# ours (CONTAINERS_CONF) so /etc is untouched.
# Nothing can be pulled from the internet here, so the test image is made locally: a busybox
# rootfs imported as localhost/busybox:canopy-test.
#
# For tests of pulls with registry credentials it also runs Debian's docker-registry on
# 127.0.0.1:55000 (htpasswd auth, user canopy), marked insecure (plain HTTP) in a registries.conf
# of ours (CONTAINERS_REGISTRIES_CONF), with the test image pushed as
# 127.0.0.1:55000/canopy/busybox:private; the details go to registry.env next to the socket.
#
# Prints exactly one line on stdout, the one to export:
#   CANOPY_TEST_DOCKER_HOST=unix:///var/tmp/canopy-podman/podman.sock
# Everything else goes to stderr. Re-running while the service answers (with the same
# configuration) only re-checks the registry and the images. Needs root: run as a non-root
# user, it runs itself again with sudo (or says that it cannot). Any failure stops it with a
# message on stderr naming what failed.
set -euo pipefail

log() { echo "podman.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
trap 'log "error: failed at line $LINENO: $BASH_COMMAND (exit $?)"' ERR

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null \
        || die "must run as root (it installs packages and starts a rootful Podman service), and sudo is not installed: run it as root"
    log "not root: running again with sudo"
    exec sudo CANOPY_PODMAN_DIR="${CANOPY_PODMAN_DIR:-}" CANOPY_REGISTRY_DIR="${CANOPY_REGISTRY_DIR:-}" "$0" "$@"
fi

DIR=${CANOPY_PODMAN_DIR:-/var/tmp/canopy-podman}
SOCK="$DIR/podman.sock"
IMAGE=localhost/busybox:canopy-test
export CONTAINERS_CONF="$DIR/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$DIR/registries.conf"

REGISTRY_DIR=${CANOPY_REGISTRY_DIR:-/var/tmp/canopy-registry}
REGISTRY=127.0.0.1:55000
REGISTRY_USER=canopy
REGISTRY_PASSWORD=canopy-registry-test
# bcrypt of REGISTRY_PASSWORD (htpasswd -Bbn -C 10), so apache2-utils is not needed.
REGISTRY_HTPASSWD='canopy:$2y$10$Q0.oxKW/g036rl/WWCmsNOoCPPRuxGtIo/CgTwuH/iq0Yb.QdY8qy'
PRIVATE_IMAGE=$REGISTRY/canopy/busybox:private

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || [ ! -x /bin/busybox ] \
    || ! command -v docker-registry >/dev/null || ! command -v curl >/dev/null; then
    log "installing podman, runc, busybox-static and docker-registry"
    command -v apt-get >/dev/null \
        || die "podman, runc, /bin/busybox, docker-registry or curl is missing and there is no apt-get to install them (this script knows Debian and Ubuntu): install them, then run it again"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq podman runc busybox-static docker-registry curl >&2
fi

# Writes stdin to $1 unless it already has exactly that content.
write_if_changed() {
    local tmp="$1.tmp"
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

mkdir -p "$DIR"
write_if_changed "$CONTAINERS_CONF" <<'CONF'
# Written by scripts/podman.sh; used through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
# Only our test registry, over plain HTTP; no short-name search (nothing can be pulled anyway).
write_if_changed "$CONTAINERS_REGISTRIES_CONF" <<CONF
# Written by scripts/podman.sh; used through CONTAINERS_REGISTRIES_CONF.
unqualified-search-registries = []
[[registry]]
location = "$REGISTRY"
insecure = true
CONF

# A service answers when GET /_ping returns OK.
answers() {
    curl -fsS --max-time 3 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1
}
# Whether the pid we recorded is (still) our service.
our_service() {
    [ -f "$DIR/service.pid" ] && grep -qs "system" "/proc/$(cat "$DIR/service.pid")/cmdline"
}

# A service started with another configuration than the current one is restarted.
stamp=$(cat "$CONTAINERS_CONF" "$CONTAINERS_REGISTRIES_CONF")
# A service whose working directory was deleted (started from a checkout since removed) fails
# every container start ("conmon: Failed to get working directory"): restart it too.
cwd_gone() {
    case "$(readlink "/proc/$(cat "$DIR/service.pid" 2>/dev/null)/cwd" 2>/dev/null)" in
        *" (deleted)") return 0 ;;
        *) return 1 ;;
    esac
}
if answers && our_service && { [ "$stamp" != "$(cat "$DIR/service.stamp" 2>/dev/null)" ] || cwd_gone; }; then
    log "configuration changed or working directory gone; restarting the service (pid $(cat "$DIR/service.pid"))"
    kill "$(cat "$DIR/service.pid")"
    for _ in $(seq 1 50); do
        our_service || break
        sleep 0.2
    done
fi

if answers; then
    log "service already answering on $SOCK"
else
    if our_service; then
        log "service pid $(cat "$DIR/service.pid") exists but does not answer yet"
    else
        # A stale socket from a dead service would make `podman system service` fail.
        rm -f "$SOCK"
        # setsid + nohup: the service must outlive this script (and the shell that ran it).
        # From /, so that no checkout the script ran in is the service's working directory.
        (cd / && exec setsid nohup podman system service --time=0 "unix://$SOCK" \
            >>"$DIR/service.log" 2>&1 </dev/null) &
        echo $! >"$DIR/service.pid"
        echo "$stamp" >"$DIR/service.stamp"
        log "started podman system service (pid $!, log $DIR/service.log)"
    fi
    for _ in $(seq 1 120); do
        answers && break
        sleep 0.5
    done
    if ! answers; then
        log "service did not answer on $SOCK within 60 s; last lines of $DIR/service.log:"
        tail -n 20 "$DIR/service.log" >&2 || true
        exit 1
    fi
    log "service answering on $SOCK"
fi

if podman image exists "$IMAGE"; then
    log "image $IMAGE present"
else
    root=$(mktemp -d)
    trap 'rm -rf "$root" "$root.tar"' EXIT
    mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    echo '<html><body>canopy test</body></html>' >"$root/www/index.html"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    tar -C "$root" -cf "$root.tar" .
    podman import --change 'ENV=PATH=/bin' --change 'CMD=["/bin/sh"]' "$root.tar" "$IMAGE" >&2
    log "imported $IMAGE"
fi

# The test registry: 401 without credentials means it is up and asks for them.
registry_answers() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$REGISTRY/v2/")" = 401 ]
}
if registry_answers; then
    log "registry already answering on $REGISTRY"
else
    mkdir -p "$REGISTRY_DIR/data"
    echo "$REGISTRY_HTPASSWD" >"$REGISTRY_DIR/htpasswd"
    cat >"$REGISTRY_DIR/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
http:
  addr: $REGISTRY
auth:
  htpasswd:
    realm: canopy-test
    path: $REGISTRY_DIR/htpasswd
CONF
    (cd / && exec setsid nohup docker-registry serve "$REGISTRY_DIR/config.yml" \
        >>"$REGISTRY_DIR/registry.log" 2>&1 </dev/null) &
    echo $! >"$REGISTRY_DIR/registry.pid"
    for _ in $(seq 1 100); do
        registry_answers && break
        sleep 0.2
    done
    if ! registry_answers; then
        log "registry did not answer on $REGISTRY; last lines of $REGISTRY_DIR/registry.log:"
        tail -n 20 "$REGISTRY_DIR/registry.log" >&2 || true
        exit 1
    fi
    log "started docker-registry on $REGISTRY (pid $(cat "$REGISTRY_DIR/registry.pid"))"
fi
if curl -fsS --max-time 5 -u "$REGISTRY_USER:$REGISTRY_PASSWORD" \
    "http://$REGISTRY/v2/canopy/busybox/tags/list" 2>/dev/null | grep -q '"private"'; then
    log "image $PRIVATE_IMAGE present in the registry"
else
    podman push -q --tls-verify=false --creds "$REGISTRY_USER:$REGISTRY_PASSWORD" \
        "$IMAGE" "docker://$PRIVATE_IMAGE" >&2
    log "pushed $PRIVATE_IMAGE"
fi
write_if_changed "$DIR/registry.env" <<CONF
CANOPY_TEST_REGISTRY=$REGISTRY
CANOPY_TEST_REGISTRY_USER=$REGISTRY_USER
CANOPY_TEST_REGISTRY_PASSWORD=$REGISTRY_PASSWORD
CANOPY_TEST_REGISTRY_IMAGE=$PRIVATE_IMAGE
CONF

echo "CANOPY_TEST_DOCKER_HOST=unix://$SOCK"
