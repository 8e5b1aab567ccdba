#!/usr/bin/env bash
# Builds (or reuses) the Raspberry Pi OS-shaped base image of one release vintage:
#   base.sh bookworm|trixie-2025-10|trixie-2026   -> prints a cache directory holding
#     base.img     the disk image (MBR, FAT32 bootfs, ext4 rootfs; see scripts/mkimage)
#     vmlinuz      the root's kernel, initrd.img its small initramfs (for qemu -kernel/-initrd)
#     disk-id      the image's MBR disk id
# On top of rootfs.sh's Debian root of the vintage's release (a vintage is an overlay
# on the cached root of its release: only this cheap step differs) it adds what makes
# it that Raspberry Pi OS vintage for the agent, from the vintage's table in
# builder/src/upstream.toml (scripts/vintage-facts): the first user as pi-gen creates
# it (uid 1000, password locked, the vintage's shell and groups), 010_pi-nopasswd
# while raspberrypi-sys-mods shipped it, userconf-pi's wizard as export-image leaves
# it (a STAND-IN userconfig.service, enabled, waiting on tty8; getty@tty1 disabled;
# the sshd banner), cloud-init's datasource configuration in the vintage's style
# (Trixie), hostname raspberrypi, ssh disabled until something enables it, the
# kernel's interface names (eth0, as on a Pi), the first-boot stand-in (Bookworm)
# from overlay/, then lays it out with scripts/mkimage --vintage --root-dir (boot
# partition: cluster size, config.txt sections, seed templates of the vintage).
# Cached by a hash of the root, the vintage's facts and these scripts, so reruns
# take no time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vintage="${1:?usage: base.sh bookworm|trixie-2025-10|trixie-2026}"
cache="${PIIMG_E2E_CACHE:-/var/cache/piimg-e2e}"
facts="$("$here/../vintage-facts" "$vintage")"
eval "$facts"
flavour="$v_codename"   # the release whose cached root this vintage lays over
root_src="$("$here/rootfs.sh" "$flavour")"

key="$( { echo "$(basename "$root_src")"; echo "$facts"; cd "$here"; cat base.sh ../mkimage ../vintage-facts; find overlay -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done; } | sha256sum | cut -c1-16)"
out="$cache/base-$vintage-$key"
if [ -f "$out/base.img" ]; then echo "$out"; exit 0; fi

tmp="$(mktemp -d "$cache/base-$vintage.tmp.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf --one-file-system "$tmp"' EXIT
echo "base: laying out the $vintage base image (on the $flavour root)" >&2
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

# The first user: pi-gen's `adduser --disabled-password` (Bookworm, Trixie 2025) or
# `--disabled-login` (shell /usr/sbin/nologin, Trixie since 2026-02), then
# `adduser USER GRP` for its groups (creating input/spi/i2c/gpio as pi-gen does).
groups=""
while read -r grp; do
  [ -n "$grp" ] || continue
  in_root getent group "$grp" >/dev/null || in_root groupadd -r "$grp"
  groups="${groups:+$groups,}$grp"
done <<<"$v_first_user_groups"
in_root useradd -m -u 1000 -U -s "$v_first_user_shell" -G "$groups" "$v_first_user"
in_root passwd -l "$v_first_user" >/dev/null
mkdir -p "$root/etc/sudoers.d"
if [ "$v_nopasswd_sudo" = 1 ]; then
  # raspberrypi-sys-mods' drop-in, renamed to the first user by pi-gen.
  echo "$v_first_user ALL=(ALL) NOPASSWD: ALL" >"$root/etc/sudoers.d/010_pi-nopasswd"
  chmod 0440 "$root/etc/sudoers.d/010_pi-nopasswd"
fi
if [ "$v_userconfig_service" = 1 ]; then
  # What userconf-pi's `rename-user -f -s` leaves (pi-gen export-image/01-user-rename):
  # the wizard enabled, getty@tty1 disabled, the sshd banner. The unit is a STAND-IN
  # that, like the real wizard on a console-only image, waits for a person forever.
  cat >"$root/usr/lib/systemd/system/userconfig.service" <<'UNIT'
# STAND-IN for userconf-pi's userconfig.service (piimg e2e): same name, place, type
# and target; like the real first-boot wizard on a console-only image it waits on
# tty8 for a person and never finishes by itself.
[Unit]
Description=User configuration dialog (stand-in)
After=systemd-user-sessions.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c "echo userconfig stand-in: waiting for a person on tty8; exec sleep infinity"
StandardInput=tty
StandardOutput=journal
TTYPath=/dev/tty8
[Install]
WantedBy=multi-user.target
UNIT
  in_root systemctl enable userconfig.service >/dev/null 2>&1
  in_root systemctl disable getty@tty1.service >/dev/null 2>&1 || true
  mkdir -p "$root/etc/ssh/sshd_config.d" "$root/usr/share/userconf-pi"
  echo "Banner /usr/share/userconf-pi/sshd_banner" >"$root/etc/ssh/sshd_config.d/rename_user.conf"
  printf 'Please note that SSH may not work until a valid user has been set up. (stand-in)\n' \
    >"$root/usr/share/userconf-pi/sshd_banner"
fi
cp -a "$here/overlay/common/." "$here/overlay/$flavour/." "$root/"
if [ -n "$v_cloud_init_datasource" ]; then
  # Where cloud-init finds the seed, in the vintage's style: pi-gen 372e5636's
  # /etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg (seedfrom), or the boot partition's
  # FAT label (fs_label).
  case "$v_cloud_init_datasource" in
    seedfrom) ds='    seedfrom: file:///boot/firmware' ;;
    fs_label) ds='    fs_label: bootfs' ;;
    *) echo "base: vintage $vintage: unknown cloud_init_datasource '$v_cloud_init_datasource'" >&2; exit 1 ;;
  esac
  printf 'datasource_list: [ NoCloud, None ]\ndatasource:\n  NoCloud:\n%s\n' "$ds" \
    >"$root/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg"
fi
rm -f "$root/etc/machine-id"; : >"$root/etc/machine-id"

cp "$(readlink -f "$root"/vmlinuz 2>/dev/null || ls "$root"/boot/vmlinuz-* | tail -n1)" "$tmp/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | tail -n1)" "$tmp/initrd.img"

# A fixed disk id per flavour (real releases have one too); first boot replaces it.
diskid="$(printf '%s' "piimg-e2e-$vintage" | sha256sum | cut -c1-8)"
echo "$diskid" >"$tmp/disk-id"
# The Raspberry Pi OS layout (MBR, FAT32 bootfs with the release's cmdline.txt and
# config.txt, ext4 rootfs, fstab by PARTUUID) is scripts/mkimage's, shared with the
# builder's tests.
"$here/../mkimage" --vintage "$vintage" --root-dir "$root" --disk-id "$diskid" --out "$tmp/base.img" >&2
rm -rf --one-file-system "$root"
mv -T "$tmp" "$out"
trap - EXIT
echo "$out"
