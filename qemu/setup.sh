#!/usr/bin/env bash
# Gozen rig set-up: downloads (never installs as a Xen host) Debian's Xen 4.17,
# a Debian Linux kernel, the Xen toolstack and busybox into a cache, unpacks
# them, and makes sure QEMU 7.2 and cpio are present. Idempotent: a second
# run checks and returns at once. apt verifies every package's checksum.
#
# Cache: $GOZEN_RIG_CACHE (default ~/.cache/gozen/rig).
set -euo pipefail

CACHE=${GOZEN_RIG_CACHE:-$HOME/.cache/gozen/rig}
mkdir -p "$CACHE"
log() { echo "rig-setup: $*" >&2; }
die() { echo "rig-setup: error: $*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

apt_updated=
apt_update() { [ -n "$apt_updated" ] && return; log "apt-get update"; as_root apt-get update -qq || die "apt-get update failed"; apt_updated=1; }

# --- host tools: QEMU 7.2 from bookworm (QEMU 10 breaks nested PVH), cpio ---
qemu_ok() { command -v qemu-system-x86_64 >/dev/null && qemu-system-x86_64 --version | grep -q 'version 7\.2'; }
if ! qemu_ok; then
	apt_update
	log "installing QEMU 7.2 (qemu-system-x86 from bookworm)"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		qemu-system-x86/bookworm qemu-system-common/bookworm qemu-system-data/bookworm seabios >&2 ||
		die "could not install QEMU 7.2 (qemu-system-x86/bookworm)"
	qemu_ok || die "qemu-system-x86_64 is not version 7.2: $(qemu-system-x86_64 --version | head -1)"
fi
for tool in cpio gzip perl; do
	command -v $tool >/dev/null && continue
	apt_update; log "installing $tool"; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $tool >&2
done

# --- Debian packages for the guest side ---
if [ ! -f "$CACHE/kernel-version" ]; then
	apt_update
	kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	[ -n "$kpkg" ] || die "cannot resolve the kernel package from linux-image-amd64"
	echo "${kpkg#linux-image-}" > "$CACHE/kernel-version.tmp" && mv "$CACHE/kernel-version.tmp" "$CACHE/kernel-version"
fi
KVER=$(cat "$CACHE/kernel-version")
PKGS="xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils libxen-dev
 libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenhypfs1
 libxenmisc4.17 libxenstore4 libxentoolcore1 libxentoollog1 libyajl2 busybox-static dosfstools
 linux-image-$KVER"
stamp="$CACHE/debs.done"
want=$(echo $PKGS | tr ' ' '\n' | sort | tr '\n' ' ')
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
	apt_update
	mkdir -p "$CACHE/debs"
	log "downloading Debian packages into $CACHE/debs"
	(cd "$CACHE/debs" && apt-get download $PKGS) >&2 || die "apt-get download failed"
	rm -rf "$CACHE/x.tmp" && mkdir -p "$CACHE/x.tmp"
	for f in "$CACHE"/debs/*.deb; do dpkg-deb -x "$f" "$CACHE/x.tmp"; done
	rm -rf "$CACHE/x" && mv "$CACHE/x.tmp" "$CACHE/x"
	zcat "$CACHE/x/boot/xen-4.17-amd64.gz" > "$CACHE/xen.tmp" && mv "$CACHE/xen.tmp" "$CACHE/xen"
	echo "$want" > "$stamp"
fi
[ -s "$CACHE/xen" ] || die "no hypervisor at $CACHE/xen"
[ -f "$CACHE/x/boot/vmlinuz-$KVER" ] || die "no kernel at $CACHE/x/boot/vmlinuz-$KVER"

# --- dom0 initramfs (rebuilt when its sources change) ---
here=$(cd "$(dirname "$0")" && pwd)
src_sum=$(cat "$here/mkinitramfs.sh" "$here"/dom0/* | sha256sum | cut -c1-16)
if [ ! -f "$CACHE/dom0.cpio.gz" ] || [ "$(cat "$CACHE/dom0.sum" 2>/dev/null)" != "$src_sum" ]; then
	log "building the dom0 initramfs"
	GOZEN_RIG_CACHE="$CACHE" "$here/mkinitramfs.sh" >&2
	echo "$src_sum" > "$CACHE/dom0.sum"
fi
echo "$CACHE"
