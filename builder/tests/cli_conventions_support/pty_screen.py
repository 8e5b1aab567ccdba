#!/usr/bin/env python3
"""Runs a command on an 80x24 pseudo-terminal and prints what a terminal would
show at the end: the raw output replayed through a minimal VT100 model (CR, LF,
cursor up/down/column, erase in line/display -- what indicatif uses).

Usage: pty_screen.py CMD [ARG...]
Prints "status=N", "raw-bars=N" (how many progress redraws went by), then the
final screen's non-empty lines.
"""
import fcntl
import os
import pty
import re
import struct
import sys
import termios

COLS = 80


def run(argv):
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLS, 0, 0))
        os.execvp(argv[0], argv)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), data.decode("utf-8", "replace")


def screen(text):
    lines = [[]]
    row = col = 0
    i = 0
    csi = re.compile(r"\x1b\[(\??)([0-9;]*)([A-Za-z])")

    def line(r):
        while len(lines) <= r:
            lines.append([])
        return lines[r]

    while i < len(text):
        c = text[i]
        if c == "\x1b":
            m = csi.match(text, i)
            if not m:
                i += 1
                continue
            i = m.end()
            if m.group(1):
                continue  # private modes (cursor show/hide)
            arg = m.group(2)
            n = int(arg) if arg.isdigit() else None
            cmd = m.group(3)
            if cmd == "A":
                row = max(0, row - (n or 1))
            elif cmd == "B":
                row += n or 1
            elif cmd == "G":
                col = (n or 1) - 1
            elif cmd == "K":
                cur = line(row)
                if n == 2:
                    cur.clear()
                elif n in (None, 0):
                    del cur[col:]
                elif n == 1:
                    cur[:col] = [" "] * min(col, len(cur))
            elif cmd == "J":
                del line(row)[col:]
                if n in (None, 0):
                    del lines[row + 1:]
                elif n == 2:
                    lines[:] = [[]]
                    row = col = 0
            continue
        if c == "\r":
            col = 0
        elif c == "\n":
            row += 1
            col = 0
        elif c >= " ":
            cur = line(row)
            if col >= COLS:
                row += 1
                col = 0
                cur = line(row)
            while len(cur) < col:
                cur.append(" ")
            if col < len(cur):
                cur[col] = c
            else:
                cur.append(c)
            col += 1
        i += 1
    return ["".join(l).rstrip() for l in lines if "".join(l).strip()]


if __name__ == "__main__":
    code, raw = run(sys.argv[1:])
    print(f"status={code}")
    print(f"raw-bars={raw.count('ETA')}")
    for l in screen(raw):
        print(l)
