#!/usr/bin/env bash
# Builds (once, cached) the tiny test virtual machine for canopy-vm's QEMU tests and the README's
# tour (QEMU on a host: docs/HOST-SETUP.md): a Debian kernel plus a busybox initramfs whose /init
# loads the virtio network modules from the same kernel package, configures eth0 statically for
# QEMU user networking (10.0.2.15/24, gateway 10.0.2.2), serves HTTP on port 80 with
# `busybox httpd`, powers off on the ACPI power button (busybox acpid, so QMP system_powerdown
# works) and prints a boot marker on the console (boot with `console=ttyS0`).
#
# Installs qemu-system-x86, qemu-utils, busybox-static and genisoimage (for cloud-init seeds) when
# missing. The result lives in $CANOPY_TEST_VM_DIR (default /var/cache/canopy-test-vm); reruns
# only check it. Prints the lines to export on stdout, everything else on stderr:
#   CANOPY_TEST_VM_KERNEL=/var/cache/canopy-test-vm/vmlinuz
#   CANOPY_TEST_VM_KERNEL_SHA256=<hex>
#   CANOPY_TEST_VM_INITRD=/var/cache/canopy-test-vm/initrd.img
#   CANOPY_TEST_VM_INITRD_SHA256=<hex>
# Needs root on Debian or Ubuntu (apt-get): run as a non-root user, it runs itself again with
# sudo (or says that it cannot), so `eval "$(scripts/vm-image.sh)"` works either way. Any failure
# stops it with a message on stderr naming what failed, and nothing on stdout.
set -euo pipefail

log() { echo "vm-image.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
trap 'log "error: failed at line $LINENO: $BASH_COMMAND (exit $?)"' ERR

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null \
        || die "must run as root (it installs QEMU with apt-get and writes ${CANOPY_TEST_VM_DIR:-/var/cache/canopy-test-vm}), and sudo is not installed: run it as root"
    log "not root: running again with sudo"
    exec sudo CANOPY_TEST_VM_DIR="${CANOPY_TEST_VM_DIR:-}" "$0" "$@"
fi

DIR=${CANOPY_TEST_VM_DIR:-/var/cache/canopy-test-vm}
# Bump when the recipe below changes, so cached images are rebuilt.
RECIPE=3
MARKER=CANOPY-TEST-VM-BOOTED

need=()
if ! command -v qemu-system-x86_64 >/dev/null; then
    # qemu-utils is pinned to qemu-system-x86's version below.
    need+=(qemu-system-x86 qemu-utils)
elif ! command -v qemu-img >/dev/null; then
    need+=(qemu-utils)
fi
[ -x /bin/busybox ] || need+=(busybox-static)
command -v genisoimage >/dev/null || need+=(genisoimage)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    command -v apt-get >/dev/null \
        || die "missing ${need[*]} and there is no apt-get to install them (this script knows Debian and Ubuntu): install them, then run it again"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    if [ "${need[0]}" = qemu-system-x86 ]; then
        # Some images preinstall a newer qemu-utils (from backports) that Breaks Debian's
        # qemu-system-common: pin it to qemu-system-x86's version (maybe a downgrade; fine).
        need[1]="qemu-utils=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')"
    fi
    apt-get install -y -qq --no-install-recommends --allow-downgrades "${need[@]}" >&2
fi

print_env() {
    echo "CANOPY_TEST_VM_KERNEL=$DIR/vmlinuz"
    echo "CANOPY_TEST_VM_KERNEL_SHA256=$(sha256sum "$DIR/vmlinuz" | cut -d' ' -f1)"
    echo "CANOPY_TEST_VM_INITRD=$DIR/initrd.img"
    echo "CANOPY_TEST_VM_INITRD_SHA256=$(sha256sum "$DIR/initrd.img" | cut -d' ' -f1)"
}

if [ -f "$DIR/vmlinuz" ] && [ -f "$DIR/initrd.img" ] \
    && [ "$(cat "$DIR/recipe" 2>/dev/null)" = "$RECIPE" ]; then
    log "test VM image cached in $DIR"
    print_env
    exit 0
fi

mkdir -p "$DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The kernel the linux-image-amd64 meta-package currently points at.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$pkg" ]; then
    apt-get update -qq >&2
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
fi
[ -n "$pkg" ] || die "cannot resolve linux-image-amd64 to a kernel package (apt-cache depends linux-image-amd64 names none)"
log "downloading $pkg"
# apt-get download writes into the current directory (it warns that _apt cannot write to a
# mktemp dir and downloads as root instead; harmless).
(cd "$work" && apt-get download "$pkg") >&2
dpkg-deb -x "$work"/linux-image-*.deb "$work/deb"
kver=$(ls "$work/deb/lib/modules")
moddir="$work/deb/lib/modules/$kver/kernel"

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,www,lib/modules,etc/acpi/PWRF}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done

# Modules (with their dependencies first), uncompressed so busybox insmod can load them.
loaded=()
add_module() {
    local name=$1 f dep deps
    for m in "${loaded[@]}"; do [ "$m" = "$name" ] && return 0; done
    f=$(find "$moddir" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \) | head -n 1)
    if [ -z "$f" ]; then
        # Built into this kernel (or named with dashes): nothing to load.
        f=$(find "$moddir" -name "${name//_/-}.ko*" | head -n 1)
        [ -n "$f" ] || return 0
    fi
    case "$f" in
        *.xz) xz -dc "$f" >"$root/lib/modules/$name.ko" ;;
        *.zst) zstd -qdc "$f" >"$root/lib/modules/$name.ko" ;;
        *) cp "$f" "$root/lib/modules/$name.ko" ;;
    esac
    deps=$(grep -a -o 'depends=[a-z0-9_,-]*' "$root/lib/modules/$name.ko" | head -n 1 | cut -d= -f2)
    for dep in ${deps//,/ }; do add_module "$dep"; done
    loaded+=("$name")
    echo "$name" >>"$root/lib/modules/order"
}
: >"$root/lib/modules/order"
for m in virtio_pci virtio_net button evdev; do add_module "$m"; done
log "modules: $(tr '\n' ' ' <"$root/lib/modules/order")"

echo '<html><body>canopy test vm</body></html>' >"$root/www/index.html"
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
# busybox acpid runs CONFDIR/PWRF/00000080 for the power button (QMP system_powerdown).
cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "canopy-test-vm: power button, powering off" >/dev/console
sync
poweroff -f
EOF
chmod +x "$root/etc/acpi/PWRF/00000080"

cat >"$root/init" <<EOF
#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in \$(cat /lib/modules/order); do insmod /lib/modules/\$m.ko 2>/dev/null; done
ip link set lo up
for _ in \$(seq 1 50); do [ -e /sys/class/net/eth0 ] && break; usleep 100000; done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
httpd -p 80 -h /www
acpid -c /etc/acpi -l /tmp/acpid.log
echo "$MARKER" >/dev/console
while true; do sleep 3600; done
EOF
chmod +x "$root/init"

(cd "$root" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9) >"$work/initrd.img"
cp "$work/deb/boot/vmlinuz-$kver" "$work/vmlinuz"
mv "$work/vmlinuz" "$DIR/vmlinuz"
mv "$work/initrd.img" "$DIR/initrd.img"
echo "$RECIPE" >"$DIR/recipe"
log "built test VM ($kver) in $DIR"
print_env
