#!/usr/bin/env python3
"""Makes the image fuzz targets' seeds from disk images (scripts/mkimage output).

usage: fuzz/seeds.py CORPUS_ROOT IMAGE...

For each image, writes one seed per image target into CORPUS_ROOT/<target>/, in the
sparse disk encoding of fuzz/src/harness.rs: the disk size, then only the image's
non-zero 512-byte sectors (the parsers never need the zeros, and a fuzzer works best
on small inputs):
  table  the sectors outside every partition (MBR, GPT headers and entries, backup)
  fat    those plus the boot (first) partition
  ext4   those plus the root (second) partition
  image  all of them
"""
import os
import struct
import sys

SECTOR = 512
CHUNK = 32 * 1024  # bytes per chunk (the encoding allows up to 65535)


def partitions(f, size):
    """(first sector, sector count) of the partitions of an MBR or GPT image."""
    f.seek(0)
    mbr = f.read(SECTOR)
    entries = [struct.unpack_from("<B3xBxxxII", mbr, 446 + 16 * i) for i in range(4)]
    if entries[0][1] == 0xEE:  # protective MBR: read the primary GPT
        f.seek(SECTOR)
        hdr = f.read(SECTOR)
        lba, count, esize = struct.unpack_from("<QII", hdr, 72)
        f.seek(lba * SECTOR)
        table = f.read(count * esize)
        out = []
        for i in range(count):
            e = table[i * esize:(i + 1) * esize]
            if e[:16] == bytes(16):
                continue
            first, last = struct.unpack_from("<QQ", e, 32)
            out.append((first, last - first + 1))
        return out
    return [(start, n) for _, typ, start, n in entries if typ and n]


def nonzero_runs(f, size, keep):
    """Runs (first sector, bytes) of non-zero sectors for which keep(sector) holds."""
    runs = []
    f.seek(0)
    sector = 0
    cur_start, cur = None, bytearray()
    while True:
        block = f.read(1 << 20)
        if not block:
            break
        for off in range(0, len(block), SECTOR):
            s = block[off:off + SECTOR]
            if s.count(0) != len(s) and keep(sector):
                if cur_start is None or len(cur) >= CHUNK:
                    if cur_start is not None:
                        runs.append((cur_start, bytes(cur)))
                    cur_start, cur = sector, bytearray()
                cur += s
            elif cur_start is not None:
                runs.append((cur_start, bytes(cur)))
                cur_start, cur = None, bytearray()
            sector += 1
    if cur_start is not None:
        runs.append((cur_start, bytes(cur)))
    return runs


def encode(size, runs):
    out = bytearray(struct.pack("<I", size // SECTOR))
    for start, data in runs:
        out += struct.pack("<IH", start, len(data)) + data
    return bytes(out)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    root = sys.argv[1]
    for path in sys.argv[2:]:
        name = os.path.basename(path).rsplit(".", 1)[0]
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            parts = partitions(f, size)

            def inside(sector, which):
                return [p for p in which if p[0] <= sector < p[0] + p[1]]

            boot, rest = parts[:1], parts[1:2]
            picks = {
                "table": lambda s: not inside(s, parts),
                "fat": lambda s: not inside(s, parts) or bool(inside(s, boot)),
                "ext4": lambda s: not inside(s, parts) or bool(inside(s, rest)),
                "image": lambda s: True,
            }
            for target, keep in picks.items():
                data = encode(size, nonzero_runs(f, size, keep))
                os.makedirs(os.path.join(root, target), exist_ok=True)
                with open(os.path.join(root, target, name), "wb") as out:
                    out.write(data)
                print(f"{target}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
