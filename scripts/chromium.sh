#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver server for the web console's browser tests
# (crates/canopy-web/tests/browser.rs), idempotently, from Debian's packages (never a
# downloaded browser): `chromium` and `chromium-driver`.
#
# Prints only the lines to export on stdout:
#   CANOPY_TEST_CHROMIUM=/usr/bin/chromium
#   CANOPY_TEST_CHROMEDRIVER=/usr/bin/chromedriver
# Everything else goes to stderr. Fails loudly (non-zero, with the reason) when anything does.
# Must run as root (apt-get).
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update"
    apt-get install -y -qq "${need[@]}" >&2 || die "apt-get install ${need[*]}"
fi

chromium=$(command -v chromium) || die "chromium is not on PATH after installing it"
driver=$(command -v chromedriver) || die "chromedriver is not on PATH after installing chromium-driver"
# Both must run (a half-installed package or a missing library shows here, not in a test).
"$driver" --version >&2 || die "$driver --version failed"
log "$("$chromium" --version 2>/dev/null | head -n 1)"

echo "CANOPY_TEST_CHROMIUM=$chromium"
echo "CANOPY_TEST_CHROMEDRIVER=$driver"
