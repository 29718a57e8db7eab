"""A systemd unit's `SystemCallFilter=` applied to a real process, without systemd.

`allowed(unit)` reads the unit's filter lines as systemd does (the first line is an
allow list; each later `~` line removes from it, each later plain line adds to it)
and expands `@groups` with `systemd-analyze syscall-filter`. Run as a script,
`python unitfilter.py ALLOWFILE CMD...` loads that allow list through libseccomp
(every other system call kills the process with SIGSYS, systemd's default action)
and execs CMD, so a process that calls something the unit forbids dies as it would
under systemd.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000


def libseccomp() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                     ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    return lib


def _expand(group: str, seen: set[str]) -> set[str]:
    if group in seen:
        return set()
    seen.add(group)
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        names |= _expand(word, seen) if word.startswith("@") else {word}
    return names


def allowed(unit: Path) -> set[str]:
    """The system calls `unit`'s SystemCallFilter= lines allow (an allow list first)."""
    allow: set[str] | None = None
    for line in unit.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1].strip()
        deny = value.startswith("~")
        names: set[str] = set()
        for word in value.lstrip("~").split():
            names |= _expand(word, set()) if word.startswith("@") else {word}
        if allow is None:
            assert not deny, f"{unit.name}: the first SystemCallFilter= is expected to allow"
            allow = names
        elif deny:
            allow -= names
        else:
            allow |= names
    assert allow is not None, f"{unit.name}: no SystemCallFilter="
    return allow


def main(argv: list[str]) -> None:
    lib = libseccomp()
    if lib is None:
        raise SystemExit("no libseccomp")
    ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
    for name in Path(argv[1]).read_text().split():
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0 and lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0:
            raise SystemExit(f"seccomp_rule_add {name} failed")
    if lib.seccomp_load(ctx) != 0:
        raise SystemExit("seccomp_load failed")
    os.execv(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
