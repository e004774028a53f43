#!/usr/bin/env bash
# Builds an Argo-enabled Xen hypervisor for the rig from Debian's Xen source
# package, since Debian's binary hypervisor has no CONFIG_ARGO (argo_op gives
# -ENOSYS). Follows shared/docs/xen-rig.md, section "Argo":
#
#   - a deb-src entry for bookworm (its own sources file), then
#     `apt-get source --download-only xen=<version>`, trying 4.17 versions
#     newest first until one whose files are actually served downloads;
#   - dpkg-source -x; build deps bison and flex (plus build-essential and
#     python3 when missing);
#   - Debian's own /boot/xen-4.17-amd64.config (from the binary package that
#     qemu/setup.sh unpacked into $CACHE/x) plus CONFIG_EXPERT, CONFIG_UNSUPPORTED,
#     CONFIG_ARGO and no CONFIG_TBOOT; make olddefconfig; make -j2;
#   - xen/xen (the multiboot ELF for QEMU's -kernel) copied to $CACHE/xen-argo.
#
# Boot it with argo=1 (and mac-permissive=1 for rings whose partner is ANY).
# Idempotent: when $CACHE/xen-argo exists and its stamp matches, it returns at
# once. Prints the hypervisor's path on stdout; progress goes to stderr.
#
# Cache: $GOZEN_RIG_CACHE (default ~/.cache/gozen/rig).
set -euo pipefail

CACHE=${GOZEN_RIG_CACHE:-$HOME/.cache/gozen/rig}
OUT="$CACHE/xen-argo"
STAMP="$CACHE/xen-argo.stamp"
SRCDIR="$CACHE/argo-src"
SOURCES=/etc/apt/sources.list.d/gozen-xen-src.sources
JOBS=${GOZEN_ARGO_JOBS:-2}
# Extra Kconfig lines appended to Debian's configuration.
CONFIG_EXTRA='CONFIG_EXPERT=y
CONFIG_UNSUPPORTED=y
CONFIG_ARGO=y
# CONFIG_TBOOT is not set'

log() { echo "argo-xen: $*" >&2; }
die() { echo "argo-xen: error: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

want_stamp=$(printf '%s\n' "$CONFIG_EXTRA" | sha256sum | cut -c1-16)
if [ -s "$OUT" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want_stamp" ]; then
	echo "$OUT"
	exit 0
fi

DEBCONFIG="$CACHE/x/boot/xen-4.17-amd64.config"
[ -f "$DEBCONFIG" ] || die "no Debian Xen config at $DEBCONFIG: run qemu/setup.sh first (it unpacks xen-hypervisor-4.17-amd64 there)"
mkdir -p "$CACHE"
start=$(date +%s)

# --- deb-src entry and build dependencies ---
apt_updated=
apt_update() { [ -n "$apt_updated" ] && return; log "apt-get update"; as_root apt-get update -qq >&2 || die "apt-get update failed"; apt_updated=1; }
if [ ! -f "$SOURCES" ]; then
	log "adding a deb-src entry for bookworm in $SOURCES"
	as_root tee "$SOURCES" >/dev/null <<-'EOF'
	Types: deb-src
	URIs: http://deb.debian.org/debian
	Suites: bookworm bookworm-updates
	Components: main
	Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

	Types: deb-src
	URIs: http://deb.debian.org/debian-security
	Suites: bookworm-security
	Components: main
	Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	apt_update
fi
need=
command -v bison >/dev/null || need="$need bison"
command -v flex >/dev/null || need="$need flex"
command -v gcc >/dev/null && command -v make >/dev/null || need="$need build-essential"
[ -x /usr/bin/python3 ] || command -v python3 >/dev/null || need="$need python3"
command -v dpkg-source >/dev/null || need="$need dpkg-dev"
if [ -n "$need" ]; then
	apt_update
	log "installing build dependencies:$need"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need >&2 ||
		die "could not install:$need"
fi
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3

# --- source package: newest 4.17 version whose files are served ---
tree=$(ls -d "$SRCDIR"/xen-4.17*/ 2>/dev/null | head -1 || true)
if [ -z "$tree" ] || [ ! -f "$tree/xen/Makefile" ]; then
	versions=$(apt-cache showsrc xen 2>/dev/null | awk '/^Version: 4\.17/ {print $2}' | sort -u | sort -rV)
	if [ -z "$versions" ]; then
		apt_update
		versions=$(apt-cache showsrc xen 2>/dev/null | awk '/^Version: 4\.17/ {print $2}' | sort -u | sort -rV)
	fi
	[ -n "$versions" ] || die "apt-cache showsrc xen lists no 4.17 source (is $SOURCES in effect?)"
	rm -rf "$SRCDIR.tmp" && mkdir -p "$SRCDIR.tmp"
	got=
	for v in $versions; do
		log "downloading the source package xen=$v"
		if (cd "$SRCDIR.tmp" && apt-get source -q --download-only "xen=$v") >&2 2>"$SRCDIR.tmp/err"; then
			got=$v
			break
		fi
		log "xen=$v is not served ($(grep -m1 -E 'Err|E:|404' "$SRCDIR.tmp/err" || echo failed)); trying an older one"
		find "$SRCDIR.tmp" -maxdepth 1 -type f -delete
	done
	[ -n "$got" ] || die "no 4.17 xen source version could be downloaded (tried: $(echo $versions))"
	dsc=$(ls "$SRCDIR.tmp"/xen_*.dsc | head -1)
	log "unpacking $(basename "$dsc")"
	(cd "$SRCDIR.tmp" && dpkg-source -x "$(basename "$dsc")") >&2 || die "dpkg-source -x failed"
	rm -rf "$SRCDIR" && mv "$SRCDIR.tmp" "$SRCDIR"
	tree=$(ls -d "$SRCDIR"/xen-4.17*/ | head -1)
	[ -f "$tree/xen/Makefile" ] || die "unpacked source has no xen/Makefile under $SRCDIR"
fi
tree=${tree%/}
log "source tree: $tree"

# --- configure and build ---
{ cat "$DEBCONFIG"; printf '%s\n' "$CONFIG_EXTRA"; } > "$tree/xen/.config"
log "make olddefconfig"
make -C "$tree/xen" XEN_TARGET_ARCH=x86_64 PYTHON="$PYTHON" olddefconfig >"$SRCDIR/olddefconfig.log" 2>&1 ||
	{ tail -20 "$SRCDIR/olddefconfig.log" >&2; die "make olddefconfig failed (log: $SRCDIR/olddefconfig.log)"; }
grep -q '^CONFIG_ARGO=y' "$tree/xen/.config" || die "CONFIG_ARGO did not survive olddefconfig"
log "building the hypervisor (make -j$JOBS, about 80 s on 2 cores; log: $SRCDIR/build.log)"
make -C "$tree/xen" -j"$JOBS" XEN_TARGET_ARCH=x86_64 PYTHON="$PYTHON" >"$SRCDIR/build.log" 2>&1 ||
	{ tail -30 "$SRCDIR/build.log" >&2; die "the hypervisor build failed (log: $SRCDIR/build.log)"; }
[ -s "$tree/xen/xen" ] || die "the build produced no $tree/xen/xen"
cp "$tree/xen/xen" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "$want_stamp" > "$STAMP"
log "built $OUT in $(( $(date +%s) - start )) s; boot it with argo=1 mac-permissive=1"
echo "$OUT"
