#!/usr/bin/env bash
# Builds the tier-B dom0 initramfs ($CACHE/dom0.cpio.gz) from the Debian
# packages setup.sh unpacked into $CACHE/x: busybox, the Xen driver modules,
# xl, xenstored, oxenstored, xenconsoled, xen-init-dom0, vchan-socket-proxy
# with their libraries, and the scripts in qemu/dom0/ (init; gozen-guest and
# wait-for, which test scripts call; the xl hotplug scripts). Guests and the test
# script of a run are added by the harness as a second cpio archive.
set -euo pipefail
CACHE=${GOZEN_RIG_CACHE:-$HOME/.cache/gozen/rig}
here=$(cd "$(dirname "$0")" && pwd)
X=$CACHE/x
KVER=$(cat "$CACHE/kernel-version")
MODDIR=$X/lib/modules/$KVER/kernel
export LD_LIBRARY_PATH=$X/usr/lib/x86_64-linux-gnu
R=$CACHE/root0.tmp
rm -rf "$R"; mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,run,tmp,etc,var/log,var/lib,root,gozen}

cp "$X/bin/busybox" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
ln -s /run "$R/var/run"

for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-netback xen-blkback llc stp bridge loop e1000 tun; do
	f=$(find "$MODDIR" -name "$m.ko" -o -name "$m.ko.xz" | head -1)
	[ -n "$f" ] || { echo "module $m not found" >&2; exit 1; }
	case "$f" in *.xz) xz -dc "$f" > "$R/lib/modules/$m.ko" ;; *) cp "$f" "$R/lib/modules/" ;; esac
done

# copy a binary and the shared libraries it needs, keeping their paths
addbin() {
	local f=$1 src
	if [ -e "$X$f" ]; then src=$X$f; else src=$f; fi
	mkdir -p "$R$(dirname "$f")"; cp -L "$src" "$R$f"
	ldd "$src" 2>/dev/null | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r l; do
		[ -f "$l" ] || continue
		local t=${l#"$X"}
		mkdir -p "$R$(dirname "$t")"; [ -e "$R$t" ] || cp -L "$l" "$R$t"
	done
}
B=/usr/lib/xen-4.17/bin
for b in xl xenstored oxenstored xenconsoled xenconsole xen-init-dom0 libxl-save-helper vchan-socket-proxy xenstore-control xentop xen-cpuid xenctx xen-hvmctx; do
	[ -e "$X$B/$b" ] && addbin "$B/$b"
done
addbin /usr/bin/xenstore
# mkfs.fat and fsck.fat (dosfstools) for the block tests' FAT image
for b in mkfs.fat fsck.fat; do
	for d in /sbin /usr/sbin; do [ -e "$X$d/$b" ] && addbin "$d/$b" && break; done
done
for t in read write ls list rm exists chmod watch; do ln -sf xenstore "$R/usr/bin/xenstore-$t"; done
mkdir -p "$R/lib/x86_64-linux-gnu"; cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$R/lib/x86_64-linux-gnu/"
mkdir -p "$R/etc/xen/scripts" "$R/var/lib/xen" "$R/var/lib/xenstored" "$R/var/log/xen"
cp "$X/etc/xen/xl.conf" "$X/etc/xen/oxenstored.conf" "$R/etc/xen/" 2>/dev/null || true
# the C xenstored and oxenstored look for their config and state here
cp "$here/dom0/init" "$R/init"
cp "$here/dom0/gozen-guest" "$here/dom0/wait-for" "$here/dom0/net-up" "$R/usr/bin/"
cp "$here/dom0/vif-gozen" "$here/dom0/block-gozen" "$R/etc/xen/scripts/"
chmod +x "$R/init" "$R/usr/bin/gozen-guest" "$R/usr/bin/wait-for" "$R/usr/bin/net-up" "$R"/etc/xen/scripts/*
# the Linux PVH guest used as the boot-time reference, with a tiny initramfs
cp "$X/boot/vmlinuz-$KVER" "$R/gozen/vmlinuz"
U=$CACHE/rootU.tmp
rm -rf "$U"; mkdir -p "$U"/{bin,proc,sys,dev}
cp "$X/bin/busybox" "$U/bin/busybox"
for a in sh echo cat poweroff mount printf dd; do ln -s busybox "$U/bin/$a"; done
# The init marks its start on port 0xE9 (Xen prints "(dN) L" at once), the
# reference point for the boot-time benchmark.
cat > "$U/init" <<'INIT'
#!/bin/sh
mount -t devtmpfs devtmpfs /dev
printf 'L' | dd of=/dev/port bs=1 seek=233 count=1 2>/dev/null
printf '\n' | dd of=/dev/port bs=1 seek=233 count=1 2>/dev/null
echo "linux-domu: init running"
poweroff -f
INIT
chmod +x "$U/init"
(cd "$U" && find . | cpio -o -H newc --quiet | gzip -6) > "$R/gozen/linux-domu.cpio.gz"
rm -rf "$U"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -6) > "$CACHE/dom0.cpio.gz.tmp"
mv "$CACHE/dom0.cpio.gz.tmp" "$CACHE/dom0.cpio.gz"
rm -rf "$R"
ls -la "$CACHE/dom0.cpio.gz"
