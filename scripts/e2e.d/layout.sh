#!/usr/bin/env bash
# Lays a root tree out as a Raspberry Pi OS Lite-shaped disk image, without loop
# devices or mounts (the layout of pi-gen's export-image, see
# shared/reference/raspberry-pi-os.md):
#   layout.sh --release bookworm|trixie --root-dir DIR --disk-id HEX8 --out FILE
# MBR with the given disk id; p1 at 8 MiB, 512 MiB, type 0x0c, FAT32 `bootfs`
# holding the release's cmdline.txt and config.txt (and, on Trixie, the cloud-init
# templates); p2 type 0x83, ext4 `rootfs` (^64bit,^huge_file) made from DIR with
# mkfs.ext4 -d, sized to the tree + 20% + 200 MiB rounded up to 8 MiB.
# DIR's /etc/fstab is written here, because it names the PARTUUIDs.
set -euo pipefail
release="" root="" diskid="" out=""
while (($#)); do
  case "$1" in
    --release) release="$2"; shift 2 ;;
    --root-dir) root="$2"; shift 2 ;;
    --disk-id) diskid="${2#0x}"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "layout.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case "$release" in bookworm|trixie) ;; *) echo "layout.sh: --release must be bookworm or trixie" >&2; exit 2 ;; esac
[ -d "$root/etc" ] || { echo "layout.sh: --root-dir '$root' is not a root tree (no etc/)" >&2; exit 2; }
[[ "$diskid" =~ ^[0-9a-f]{8}$ ]] || { echo "layout.sh: --disk-id must be 8 lowercase hex digits" >&2; exit 2; }
[ -n "$out" ] || { echo "layout.sh: --out FILE is required" >&2; exit 2; }

MiB=$((1024 * 1024))
align=$((8 * MiB))
boot_start=$((8 * MiB))
boot_size=$((512 * MiB))
root_start=$((boot_start + boot_size))
tree=$(du -sb --apparent-size "$root" | cut -f1)
root_size=$(((tree * 12 / 10 + 200 * MiB + align - 1) / align * align))
total=$((root_start + root_size))

cat >"$root/etc/fstab" <<FSTAB
proc            /proc           proc    defaults          0       0
PARTUUID=$diskid-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$diskid-02  /               ext4    defaults,noatime  0       1
FSTAB
mkdir -p "$root/boot/firmware"

work="$(mktemp -d "${out}.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Boot partition files.
mkdir -p "$work/boot"
case "$release" in
  bookworm)
    echo "console=serial0,115200 console=tty1 root=PARTUUID=$diskid-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot" >"$work/boot/cmdline.txt"
    cluster=4 ;;
  trixie)
    echo "console=serial0,115200 console=tty1 root=PARTUUID=$diskid-02 rootfstype=ext4 fsck.repair=yes rootwait resize" >"$work/boot/cmdline.txt"
    cluster=1
    printf 'dsmode: local\ninstance_id: rpios-image\n' >"$work/boot/meta-data"
    printf '#cloud-config\n# This is the template Raspberry Pi OS ships; Raspberry Pi Imager replaces it.\n' >"$work/boot/user-data"
    printf '# network-config template (netplan v2); Raspberry Pi Imager replaces it.\nnetwork:\n  version: 2\n' >"$work/boot/network-config" ;;
esac
cat >"$work/boot/config.txt" <<'CONFIG'
# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on

# Automatically load overlays for detected cameras
camera_auto_detect=1

# Automatically load overlays for detected DSI displays
display_auto_detect=1

# Automatically load initramfs files, if found
auto_initramfs=1

# Enable DRM VC4 V3D driver
dtoverlay=vc4-kms-v3d
max_framebuffers=2

# Don't have the firmware create an initial video= setting in cmdline.txt.
# Use the kernel's default instead.
disable_fw_kms_setup=1

# Run in 64-bit mode
arm_64bit=1

# Disable compensation for displays with overscan
disable_overscan=1

# Run as fast as firmware / board allows
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
# This line should be removed if the legacy DWC2 controller is required
# (e.g. for USB device mode) or if USB support is not required.
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
CONFIG

truncate -s "$total" "$work/disk.img"
sfdisk --quiet --label dos "$work/disk.img" <<SFDISK
label-id: 0x$diskid
unit: sectors
start=$((boot_start / 512)), size=$((boot_size / 512)), type=c
start=$((root_start / 512)), size=$((root_size / 512)), type=83
SFDISK

mkfs.vfat -F 32 -n bootfs -s "$cluster" -C "$work/boot.img" $((boot_size / 1024)) >/dev/null 2>&1
for f in "$work/boot"/*; do mcopy -i "$work/boot.img" -o "$f" "::/$(basename "$f")"; done
fsck.vfat -n "$work/boot.img" >/dev/null

mkfs.ext4 -q -F -L rootfs -O ^64bit,^huge_file -d "$root" "$work/root.img" $((root_size / 1024))K
e2fsck -fn "$work/root.img" >/dev/null

dd if="$work/boot.img" of="$work/disk.img" bs=1M seek=$((boot_start / MiB)) conv=notrunc,sparse status=none
dd if="$work/root.img" of="$work/disk.img" bs=1M seek=$((root_start / MiB)) conv=notrunc,sparse status=none
sync -f "$work/disk.img"
mv "$work/disk.img" "$out"
