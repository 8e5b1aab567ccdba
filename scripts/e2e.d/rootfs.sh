#!/usr/bin/env bash
# Builds (or reuses) the arm64 Debian root of one e2e flavour with mmdebstrap.
#   rootfs.sh bookworm|trixie   -> prints the path of the cached root directory
# The root tree is cached under $PIIMG_E2E_CACHE (default /var/cache/piimg-e2e), keyed
# by the flavour and a hash of the recipe (this script + recipe/*), so a rerun with
# an unchanged recipe takes no time. Needs root (mmdebstrap --mode=root) and
# qemu-user-static with binfmt for aarch64.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
flavour="${1:?usage: rootfs.sh bookworm|trixie}"
case "$flavour" in bookworm|trixie) ;; *) echo "rootfs.sh: unknown flavour '$flavour' (bookworm|trixie)" >&2; exit 2 ;; esac
cache="${PIIMG_E2E_CACHE:-/var/cache/piimg-e2e}"
# Same mirror as this machine's apt (deb.debian.org unless told otherwise).
mirror="${PIIMG_E2E_MIRROR:-http://deb.debian.org/debian}"

key="$(cd "$here" && cat rootfs.sh recipe/* | { cat; echo "$flavour $mirror"; } | sha256sum | cut -c1-16)"
out="$cache/root-$flavour-$key"
if [ -d "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$cache"

packages="$(grep -hv '^\s*#' "$here/recipe/packages" $( [ -f "$here/recipe/packages.$flavour" ] && echo "$here/recipe/packages.$flavour") | xargs | tr ' ' ',')"
tmp="$out.tmp.$$"
trap 'rm -rf --one-file-system "$tmp"' EXIT
echo "rootfs: building $flavour root with mmdebstrap (cold: 8-20 min under qemu-user)" >&2
# Docs, man pages and locales are dropped: they cost time under qemu-user and
# nothing in the test reads them.
nice -n 10 mmdebstrap --mode=root --format=directory --arch=arm64 --variant=minbase \
  --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='force-confdef' --dpkgopt='force-confold' \
  --essential-hook="$here/recipe/essential-hook.sh \"\$1\"" \
  --customize-hook='chroot "$1" sh -c "lsinitramfs /boot/initrd.img-* | grep -q virtio_blk" || { echo "rootfs: initrd lacks virtio_blk" >&2; exit 1; }' \
  --customize-hook='chroot "$1" sh -c "ls -la /boot; du -sh /boot/initrd.img-*"' \
  "$flavour" "$tmp" "$mirror" >&2
mv -T "$tmp" "$out"
trap - EXIT
echo "$out"
