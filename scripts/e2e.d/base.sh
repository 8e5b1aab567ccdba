#!/usr/bin/env bash
# Builds (or reuses) the Raspberry Pi OS-shaped base image of one e2e flavour:
#   base.sh bookworm|trixie   -> prints a cache directory holding
#     base.img     the disk image (MBR, FAT32 bootfs, ext4 rootfs; see scripts/mkimage)
#     vmlinuz      the root's kernel, initrd.img its small initramfs (for qemu -kernel/-initrd)
#     disk-id      the image's MBR disk id
# On top of rootfs.sh's Debian root it adds what makes it Raspberry Pi OS-like for
# the agent: the first user `pi` (uid 1000, locked; Bookworm, as userconf-pi expects),
# hostname raspberrypi, ssh disabled until something enables it, the kernel's
# interface names (eth0, as on a Pi), the first-boot stand-in (Bookworm) or the
# cloud-init NoCloud settings (Trixie) from overlay/, then lays it out with
# scripts/mkimage --root-dir. Cached by a hash of the root and of these scripts,
# so reruns take no time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
flavour="${1:?usage: base.sh bookworm|trixie}"
cache="${PIIMG_E2E_CACHE:-/var/cache/piimg-e2e}"
root_src="$("$here/rootfs.sh" "$flavour")"

key="$( { echo "$(basename "$root_src")"; cd "$here"; cat base.sh ../mkimage; find overlay -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done; } | sha256sum | cut -c1-16)"
out="$cache/base-$flavour-$key"
if [ -f "$out/base.img" ]; then echo "$out"; exit 0; fi

tmp="$(mktemp -d "$cache/base-$flavour.tmp.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf --one-file-system "$tmp"' EXIT
echo "base: laying out the $flavour base image" >&2
root="$tmp/root"
cp -a "$root_src" "$root"
in_root() { chroot "$root" "$@"; }

mkdir -p "$root/boot/firmware"   # the boot partition's mount point
echo raspberrypi >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\traspberrypi\n' >"$root/etc/hosts"
# Raspberry Pi OS names the wired interface eth0: no predictable names.
mkdir -p "$root/etc/systemd/network"
ln -sfn /dev/null "$root/etc/systemd/network/99-default.link"
# Raspberry Pi OS ships with sshd disabled; the card's provisioning enables it.
in_root systemctl disable ssh.service >/dev/null 2>&1 || true
rm -f "$root/etc/systemd/system/sshd.service"
# The host keys mmdebstrap made are shared by every image built from this cache;
# fine for a throwaway test guest.
if [ "$flavour" = bookworm ]; then
  in_root useradd -m -u 1000 -U -s /bin/bash -G adm,dialout,cdrom,sudo,audio,video,plugdev,games,users,input,netdev pi
  in_root passwd -l pi >/dev/null
fi
cp -a "$here/overlay/common/." "$here/overlay/$flavour/." "$root/"
rm -f "$root/etc/machine-id"; : >"$root/etc/machine-id"

cp "$(readlink -f "$root"/vmlinuz 2>/dev/null || ls "$root"/boot/vmlinuz-* | tail -n1)" "$tmp/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | tail -n1)" "$tmp/initrd.img"

# A fixed disk id per flavour (real releases have one too); first boot replaces it.
diskid="$(printf '%s' "piimg-e2e-$flavour" | sha256sum | cut -c1-8)"
echo "$diskid" >"$tmp/disk-id"
# The Raspberry Pi OS layout (MBR, FAT32 bootfs with the release's cmdline.txt and
# config.txt, ext4 rootfs, fstab by PARTUUID) is scripts/mkimage's, shared with the
# builder's tests.
"$here/../mkimage" --release "$flavour" --root-dir "$root" --disk-id "$diskid" --out "$tmp/base.img" >&2
rm -rf --one-file-system "$root"
mv -T "$tmp" "$out"
trap - EXIT
echo "$out"
