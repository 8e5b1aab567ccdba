# Storage checks of scripts/e2e (sourced; uses its check/soft_check/g/card_status
# helpers and $art, $card, $NODE). tests/e2e/profile.toml gives the node
# `data_disk = "usb"` and `[storage] sd_wear = "minimal"`.
#
# The data disk: qemu has no USB bus here, so every boot attaches a second virtio
# disk (a sparse file per vintage, blank before the first boot) with serial
# piimg-e2e-data, and the kernel command line names it with the agent's test seam
# `piimg.data_disk=` (production finds the disk by its bus; the seam only exists
# on a kernel command line someone wrote it into).

STORAGE_DATA_SERIAL=piimg-e2e-data
storage_data_disk=""     # the current vintage's data disk image
storage_qemu_args=()     # extra qemu arguments of every boot
storage_append=""        # extra kernel command-line arguments of every boot

# storage_prepare: a blank 256 MiB data disk for this vintage's boots.
storage_prepare() {
  storage_data_disk="$art/out/data-disk.img"
  rm -f "$storage_data_disk"
  truncate -s 256M "$storage_data_disk"
  storage_qemu_args=(
    -drive "file=$storage_data_disk,format=raw,if=none,id=data,cache=writeback"
    -device "virtio-blk-pci,drive=data,serial=$STORAGE_DATA_SERIAL"
  )
  storage_append="piimg.data_disk=/dev/disk/by-id/virtio-$STORAGE_DATA_SERIAL"
}

# The byte offset of partition 1 of a GPT disk image.
storage_part1_offset() {
  local start
  start=$(sfdisk -d "$1" | awk -F'[=,]' '/^[^ ]+1 :/ { gsub(/ /, "", $2); print $2 }')
  echo $((start * 512))
}

# storage_checks: over SSH on the provisioned node after a reboot (the journald,
# fstab and tmp.mount changes take effect at boot), then on the card's status.
storage_checks() {
  local opts; opts="$(g findmnt -n -o OPTIONS /)"
  echo "$opts" >"$art/storage-root-options.txt"
  soft_check "sd_wear: the root is mounted noatime,commit=600 (findmnt: $opts)" \
    test -n "$(grep -w noatime <<<"$opts")" -a -n "$(grep -w 'commit=600' <<<"$opts")"
  local journald; journald="$(g systemd-analyze cat-config systemd/journald.conf 2>/dev/null)"
  echo "$journald" >"$art/storage-journald.txt"
  soft_check "sd_wear: journald's effective config says Storage=volatile, RuntimeMaxUse=64M (systemd-analyze cat-config)" \
    test "$(grep -E '^(Storage|RuntimeMaxUse)=' <<<"$journald" | tail -n 2 | xargs)" = "Storage=volatile RuntimeMaxUse=64M"
  soft_check "sd_wear: this boot's journal is in /run/log/journal (volatile)" \
    g 'sudo sh -c "ls /run/log/journal/*/system.journal >/dev/null"'
  local swaps; swaps="$(g swapon --show=NAME,TYPE --noheadings 2>/dev/null || true)"
  soft_check "sd_wear: no swap file in use (swapon: ${swaps:-none}) and no /var/swap" \
    test -z "$(awk '$2 == "file"' <<<"$swaps")" -a "$(g 'test -e /var/swap && echo present || echo absent')" = absent
  soft_check "sd_wear: /tmp is tmpfs" test "$(g findmnt -n -o FSTYPE /tmp)" = tmpfs
  soft_check "sd_wear: no .deb left in apt's cache" test -z "$(g 'ls /var/cache/apt/archives/*.deb 2>/dev/null || true')"

  local src; src="$(g findmnt -n -o SOURCE --target /var/lib/rancher/k3s)"
  soft_check "data_disk: /var/lib/rancher/k3s is on the second disk's partition (findmnt: $src)" \
    test "$src" = "$(g readlink -f /dev/disk/by-id/virtio-$STORAGE_DATA_SERIAL-part1)"
  # blkid as root: findmnt's UUID column stays empty for a user who cannot read the disk.
  local uuid; uuid="$(g sudo blkid -s UUID -o value "$src")"
  soft_check "data_disk: mounted by its UUID ($uuid) from /etc/fstab with nofail" \
    test -n "$uuid" -a -n "$(g cat /etc/fstab | grep -E "^UUID=$uuid[[:space:]]+/var/lib/rancher/k3s[[:space:]]+ext4[[:space:]]+[^ ]*nofail")"
  soft_check "data_disk: k3s.service requires the mount (RequiresMountsFor)" \
    grep -q /var/lib/rancher/k3s <<<"$(g systemctl show -p RequiresMountsFor k3s.service)"
  soft_check "data_disk: the stand-in k3s wrote its data dir on the data disk (same device as the mount)" \
    test "$(g findmnt -n -o SOURCE --target /var/lib/rancher/k3s/agent/standin-node)" = "$src"
}

# storage_checks_card: after power-off, from the card's status and the data disk
# image itself (read with e2fsprogs, independent of the guest).
storage_checks_card() {
  local status; status="$(card_status)" || fail "no valid report in the card's piimg/status.slots"
  local msg
  msg="$(python3 -c 'import json,sys; print(next(r["message"] for r in json.loads(sys.argv[1])["steps"] if r["name"]==sys.argv[2]))' "$status" boot-device)"
  soft_check "card status: boot-device names the root's disk ($msg)" grep -q 'root on /dev/vda2 of disk vda' <<<"$msg"
  msg="$(python3 -c 'import json,sys; print(next(r["message"] for r in json.loads(sys.argv[1])["steps"] if r["name"]==sys.argv[2]))' "$status" sd-wear)"
  echo "$msg" >"$art/storage-sd-wear-status.txt"
  soft_check "card status: sd-wear lists each change on its own line" \
    test "$(grep -cE '^(journald|swap|root|/tmp|apt): ' <<<"$msg")" = 5
  msg="$(python3 -c 'import json,sys; print(next(r["message"] for r in json.loads(sys.argv[1])["steps"] if r["name"]==sys.argv[2]))' "$status" data-disk)"
  soft_check "card status: data-disk formatted the blank disk ($(head -n1 <<<"$msg"))" grep -q 'was blank; formatted GPT + ext4' <<<"$msg"
  local off; off="$(storage_part1_offset "$storage_data_disk")"
  soft_check "data disk image: partition 1 is ext4 labelled piimg-data (blkid)" \
    test "$(blkid -p -O "$off" -o value -s LABEL "$storage_data_disk")" = piimg-data
  storage_fsck() { e2fsck -f -n "$storage_data_disk?offset=$off" >"$art/storage-e2fsck.txt" 2>&1; }
  soft_check "data disk image: partition 1 is clean (e2fsck -fn; $art/storage-e2fsck.txt)" storage_fsck
  soft_check "data disk image: piimg's marker names node $NODE" \
    grep -qx "node=$NODE" <<<"$(debugfs -R 'cat /.piimg-data-disk' "$storage_data_disk?offset=$off" 2>/dev/null)"
  soft_check "data disk image: the stand-in k3s's file is on it" \
    grep -qx "$NODE" <<<"$(debugfs -R 'cat /agent/standin-node' "$storage_data_disk?offset=$off" 2>/dev/null)"
}
