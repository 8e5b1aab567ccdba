#!/usr/bin/env python3
"""Several cards at once (run by `scripts/bench-flash --cards N`).

N loop devices over files in /dev/shm stand in for SD cards: a cgroup v1 blkio
group throttles each to an SD card's speed (blkio.throttle.write_bps_device, which
applies to the direct I/O piimg uses, and read_bps_device for the read-back). piimg
runs inside that group: `flash --node` to one card, then to N cards at once, the
cards composed from a generated Raspberry Pi OS-shaped base (no `build`). For each
run: wall time; bytes the process read (/proc/PID/io rchar) minus the bytes it read
back from the cards (the `--json` summary), i.e. what it read of the base and the
composed boot partitions; peak memory (VmHWM); the most disk space its temporary
files (the composed boot partitions, in TMPDIR) took at once. Never touches a real disk: the
devices are loop devices over tmpfs files, the base lives in the work directory.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WRITE_BPS = 30 * 1000 * 1000
READ_BPS = 80 * 1000 * 1000
CGROUP_ROOT = "/sys/fs/cgroup/blkio"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def sample(pid, path):
    """(VmHWM bytes, rchar) of a live process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
        with open(f"/proc/{pid}/io") as f:
            rchar = next(int(l.split()[1]) for l in f if l.startswith("rchar:"))
        return hwm, rchar
    except (OSError, StopIteration):
        return None


def temp_bytes(pid, tmpdir):
    """Disk blocks held by the files the process has open in `tmpdir` (its unnamed
    temporary files show as "TMPDIR/#N (deleted)"): what a flash adds on disk. The
    file system's free space would count every other process on this shared host."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        p = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(p).startswith(tmpdir):
                total += os.stat(p).st_blocks * 512
        except OSError:
            pass
    return total


def run(cmd, cgroup, work, env):
    """Runs cmd in the cgroup; returns wall s, peak RSS, rchar, peak disk used, JSON."""
    def enter():
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=enter, env=env, text=True)
    last = (0, 0)
    most_temp = 0
    while p.poll() is None:
        s = sample(p.pid, None)
        if s:
            last = s
        most_temp = max(most_temp, temp_bytes(p.pid, env["TMPDIR"]))
        time.sleep(0.05)
    out, err = p.communicate()
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({p.returncode}):\n{err}")
    return wall, last[0], last[1], most_temp, json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--piimg", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--cards", type=int, required=True)
    ap.add_argument("--fill-mib", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    work, n = a.work, a.cards
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000", PIIMG_CACHE=f"{work}/cache",
               TMPDIR=f"{work}/tmp")
    os.makedirs(f"{work}/tmp", exist_ok=True)
    print(f"generating a base with {a.fill_mib} MiB of data in its root...", file=sys.stderr)
    base = f"{work}/base.img"
    sh(f"{repo}/scripts/mkimage", "--release", "bookworm", "--fill-mib", str(a.fill_mib),
       "--out", base)
    # The reference profile's key is the user's ~/.ssh/id_ed25519.pub: one of its own
    # beside the copy (relative key files are taken from the profile's directory).
    with open(f"{repo}/profiles/homelab.toml") as src:
        profile = src.read().replace('"~/.ssh/id_ed25519.pub"', '"id_ed25519.pub"', 1)
    with open(f"{work}/homelab.toml", "w") as dst:
        dst.write(profile)
    if not os.path.exists(f"{work}/id_ed25519.pub"):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "piimg-bench",
           "-f", f"{work}/id_ed25519")
    nodes = ["pi5-master-1", "pi5-worker-1", "pi4-worker-1", "pi4-worker-2",
             "pi5-master-2", "pi5-master-3", "pi5-worker-2", "pi4-worker-3"][:n]
    size = os.path.getsize(base)
    cg = f"{CGROUP_ROOT}/piimg-bench-{os.getpid()}"
    loops, files = [], []
    os.makedirs(cg)
    try:
        for k in range(n):
            f = f"/dev/shm/piimg-bench-{os.getpid()}-{k}.bin"
            files.append(f)
            sh("fallocate", "-l", str(size), f)
            dev = sh("losetup", "-f", "--show", f)
            loops.append(dev)
            mm = sh("lsblk", "-dno", "MAJ:MIN", dev).replace(" ", "")
            for knob, bps in (("write", WRITE_BPS), ("read", READ_BPS)):
                with open(f"{cg}/blkio.throttle.{knob}_bps_device", "w") as fh:
                    fh.write(f"{mm} {bps}\n")
        common = [a.piimg, "--json", "flash", "--profile", f"{work}/homelab.toml",
                  "--offline", "--yes", "--force", "--base", base]
        one = common + ["--node", nodes[0], loops[0]]
        many = common + [x for nd in nodes for x in ("--node", nd)] + loops
        # Secrets and the base's map are made once, outside the timing.
        run(one, cg, work, env)
        rows = {"1 card": [], f"{n} cards at once": []}
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}...", file=sys.stderr)
            for name, cmd in (("1 card", one), (f"{n} cards at once", many)):
                wall, hwm, rchar, disk, doc = run(cmd, cg, work, env)
                cards = doc["cards"] if "cards" in doc else [doc]
                verified = sum(c.get("bytes_verified", 0) for c in cards)
                written = sum(c.get("bytes_written", 0) for c in cards)
                assert all(c.get("verified") for c in cards), doc
                rows[name].append((wall, hwm, rchar - verified, disk, written, cards[0]["mapped_bytes"]))
        t0 = time.monotonic()
        # What `build` would have put on disk for the same cards, for comparison.
        sh(a.piimg, "-q", "build", "--profile", f"{work}/homelab.toml", "--offline", "--base",
           base, "--out", f"{work}/out", *[x for nd in nodes for x in ("--node", nd)], env=env)
        build_s = time.monotonic() - t0
        build_disk = int(sh("du", "-sb", f"{work}/out").split()[0])
        build_alloc = int(sh("du", "-sB1", f"{work}/out").split()[0])
    finally:
        for dev in loops:
            subprocess.run(["losetup", "-d", dev])
        for f in files:
            if os.path.exists(f):
                os.remove(f)
        if os.path.isdir(cg):
            os.rmdir(cg)

    print(f"\nbase: {size} bytes, {a.fill_mib} MiB of root data; cards: loop devices over /dev/shm "
          f"files, throttled to {WRITE_BPS // 10**6} MB/s writes, {READ_BPS // 10**6} MB/s reads "
          f"(cgroup v1 blkio); load {open('/proc/loadavg').read().split()[:3]}")
    hdr = ("run", "wall s (median)", "per card s", "bytes written", "read besides read-back",
           "peak RSS MiB", "temp files on disk MB")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    single = None
    for name, rs in rows.items():
        wall = statistics.median(r[0] for r in rs)
        k = 1 if name == "1 card" else n
        single = single or wall
        print(f"| {name} | {wall:.1f} ({wall / single:.2f}x one card) | {wall / k:.1f} | "
              f"{rs[0][4]:,} | {max(r[2] for r in rs):,} | {max(r[1] for r in rs) / 2**20:.0f} | "
              f"{max(r[3] for r in rs) / 1e6:.1f} |")
    print(f"| (`build --node` x{n} instead, not throttled) | {build_s:.1f} | | | | | "
          f"{build_disk / 1e9:.2f} GB apparent, {build_alloc / 1e9:.2f} GB allocated in out/ |")
    print(f"mapped bytes per card: {rows['1 card'][0][5]:,}; {a.rounds} rounds")


if __name__ == "__main__":
    main()
