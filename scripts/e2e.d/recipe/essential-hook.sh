#!/bin/sh
# mmdebstrap --essential-hook: runs before the kernel and initramfs-tools are
# installed, so the one initramfs built under qemu-user is the small one.
# Debian's default (MODULES=most) takes ~30 min under qemu-user; a list of the few
# modules a virtio disk with ext4 needs takes seconds.
set -eu
root="$1"
mkdir -p "$root/etc/initramfs-tools/conf.d"
echo MODULES=list >"$root/etc/initramfs-tools/conf.d/piimg-e2e.conf"
cat >"$root/etc/initramfs-tools/modules" <<'MODS'
# piimg e2e: the qemu virt machine's root disk (virtio-blk over PCI) with ext4.
virtio_pci
virtio_blk
crc32c_generic
ext4
vfat
nls_cp437
nls_ascii
MODS
