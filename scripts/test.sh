#!/usr/bin/env bash
# Runs every test of Canopy, PostgreSQL suite and container driver included, on a fresh machine:
# installs and starts a throwaway PostgreSQL on loopback (scripts/postgres.sh) and a Podman API
# service with a local test image (scripts/podman.sh), QEMU and a tiny test VM
# (scripts/vm-image.sh), the Helm CLI and chart registries (scripts/helm.sh), headless Chromium
# and chromedriver for the web console's browser tests (scripts/chromium.sh), HAProxy for the
# multi-replica tests (scripts/haproxy.sh), then `cargo test`.
# Runs as root (the tests use the rootful Podman service); any failure stops it with a message
# naming what failed.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "test.sh: error: failed at line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: error: run it as root (sudo scripts/test.sh): the tests use a rootful Podman service and install packages" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "test.sh: error: cargo is not on the PATH (install a Rust toolchain, e.g. rustup)" >&2; exit 1; }

if [ -z "${CANOPY_TEST_DATABASE_URL:-}" ]; then
  url_line=$(scripts/postgres.sh | grep '^CANOPY_TEST_DATABASE_URL=' | tail -n 1)
  export "${url_line?}"
fi
echo "PostgreSQL for tests: ${CANOPY_TEST_DATABASE_URL}"
if [ -z "${CANOPY_TEST_DOCKER_HOST:-}" ]; then
  host_line=$(scripts/podman.sh | grep '^CANOPY_TEST_DOCKER_HOST=' | tail -n 1)
  export "${host_line?}"
fi
echo "Container engine for tests: ${CANOPY_TEST_DOCKER_HOST}"
# QEMU and the tiny test VM (kernel + busybox initramfs) for canopy-vm (scripts/vm-image.sh).
if [ -z "${CANOPY_TEST_VM_KERNEL:-}" ]; then
  vm_lines=$(scripts/vm-image.sh)
  while IFS= read -r vm_line; do
    case "$vm_line" in CANOPY_TEST_VM_*=*) export "${vm_line?}" ;; esac
  done <<<"$vm_lines"
fi
# The Helm CLI (3 and 4) and two local chart registries for canopy-helm (scripts/helm.sh).
if [ -z "${CANOPY_TEST_HELM:-}" ]; then
  helm_lines=$(scripts/helm.sh)
  while IFS= read -r helm_line; do
    case "$helm_line" in CANOPY_TEST_HELM*=* | CANOPY_TEST_CHART_*=*) export "${helm_line?}" ;; esac
  done <<<"$helm_lines"
fi
echo "Helm for chart tests: ${CANOPY_TEST_HELM} (registries ${CANOPY_TEST_CHART_REGISTRY}, ${CANOPY_TEST_CHART_REGISTRY_AUTH})"
# Headless Chromium and chromedriver (Debian packages) for canopy-web's browser tests.
if [ -z "${CANOPY_TEST_CHROMEDRIVER:-}" ]; then
  chromium_lines=$(scripts/chromium.sh)
  while IFS= read -r chromium_line; do
    case "$chromium_line" in CANOPY_TEST_CHROM*=*) export "${chromium_line?}" ;; esac
  done <<<"$chromium_lines"
fi
echo "Browser for console tests: ${CANOPY_TEST_CHROMIUM} (driver ${CANOPY_TEST_CHROMEDRIVER})"
# HAProxy (a Debian package) in front of several server replicas (crates/canopy/tests/replicas.rs).
if [ -z "${CANOPY_TEST_HAPROXY:-}" ]; then
  haproxy_line=$(scripts/haproxy.sh | grep '^CANOPY_TEST_HAPROXY=' | tail -n 1)
  export "${haproxy_line?}"
fi
echo "Load balancer for replica tests: ${CANOPY_TEST_HAPROXY}"
# KVM is unusable on these machines (guests crawl or abort): software emulation for tests.
export CANOPY_VM_ACCEL=${CANOPY_VM_ACCEL:-tcg}
echo "Test VM for QEMU tests: ${CANOPY_TEST_VM_KERNEL}"
cargo test --workspace "$@"
