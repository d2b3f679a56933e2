"""Run a command under the seccomp filter the systemd unit asks for, without systemd.

    /usr/bin/python3 tests/install/seccomp_exec.py --unit ccmitm.service -- COMMAND [ARG...]

Test machines usually have no systemd user manager (containers, CI), so `systemd-run --user`
cannot show that ccmitmd works under the unit's hardening. This script builds the equivalent
filter from the unit's own lines and then execs the command; a seccomp filter survives exec and
is inherited by every thread and child, exactly as under systemd.

What it applies, read from the unit's ``[Service]`` section:

- ``SystemCallFilter=``: the allow list (the groups of the first, non-``~`` lines, expanded with
  `systemd-analyze syscall-filter`, systemd's own group table) minus the groups and calls of the
  ``~`` lines; everything else fails with ``SystemCallErrorNumber=`` (default EPERM).
- ``SystemCallArchitectures=native``: libseccomp's filter admits the native ABI only.
- ``RestrictAddressFamilies=``: socket() only for the listed families.
- ``RestrictNamespaces=yes``: no unshare()/setns(), clone() only without CLONE_NEW* flags, and
  clone3() answers ENOSYS (its flags are out of a filter's reach), as systemd does.
- ``LockPersonality=yes``: personality() only to query or keep the default.
- ``RestrictSUIDSGID=yes``: chmod() and friends cannot set the setuid/setgid bits.
- ``NoNewPrivileges=``: libseccomp sets it before loading the filter.
- ``UMask=``.

``KeyringMode=`` and the realtime rule (covered by ``~@resources``) are not applied.

It needs libseccomp's Python bindings (Debian: python3-seccomp), which exist for the system's
Python only; that is why it runs under /usr/bin/python3 and execs the venv's interpreter.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

# Not a PyPI package: Debian's python3-seccomp, for the system Python (see the docstring).
try:
    import seccomp  # type: ignore[import-not-found]
except ImportError:
    raise SystemExit(
        "seccomp_exec: libseccomp's Python bindings are missing (Debian: python3-seccomp)"
    ) from None

# The namespace flags of clone(2); RestrictNamespaces=yes refuses all of them.
CLONE_NEW_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)
SUID_SGID = 0o6000
# personality(2): PER_LINUX, and 0xffffffff which only queries the current value.
PERSONALITY_OK = (0x0, 0xFFFFFFFF)
# (syscall, index of its mode argument) for RestrictSUIDSGID=.
CHMODS = (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2))


def service_entries(unit_text: str) -> list[tuple[str, str]]:
    """(key, value) of every assignment in the [Service] section, in order."""
    entries: list[tuple[str, str]] = []
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            entries.append((key.strip(), value.strip()))
    return entries


def syscall_groups() -> dict[str, list[str]]:
    """systemd's table: group name -> its members (calls and nested @groups)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        raise SystemExit("seccomp_exec: systemd-analyze is needed for systemd's syscall groups")
    out = subprocess.run(
        [tool, "syscall-filter"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif not line.strip() or not line.startswith((" ", "\t")):
            current = None
        elif current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(items: list[str], groups: dict[str, list[str]], seen: frozenset[str] = frozenset()) -> set[str]:
    calls: set[str] = set()
    for item in items:
        if item.startswith("@"):
            if item not in groups:
                raise SystemExit(f"seccomp_exec: unknown syscall group {item}")
            if item not in seen:
                calls |= expand(groups[item], groups, seen | {item})
        else:
            calls.add(item)
    return calls


def allowed_calls(entries: list[tuple[str, str]], groups: dict[str, list[str]]) -> set[str]:
    allow: set[str] = set()
    deny: set[str] = set()
    for key, value in entries:
        if key != "SystemCallFilter" or not value:
            continue
        if value.startswith("~"):
            deny |= expand(value[1:].split(), groups)
        else:
            allow |= expand(value.split(), groups)
    if not allow:
        raise SystemExit("seccomp_exec: the unit has no SystemCallFilter= allow list")
    return allow - deny


def _add(flt: seccomp.SyscallFilter, action: object, name: str, *args: seccomp.Arg) -> bool:
    """Add one rule; False when libseccomp does not know the call on this architecture (systemd
    skips those too)."""
    try:
        flt.add_rule(action, name, *args)
    except (RuntimeError, ValueError, OSError):
        return False
    return True


def build_filter(unit_text: str) -> tuple[seccomp.SyscallFilter, int]:
    entries = service_entries(unit_text)
    settings = dict(entries)  # the last assignment wins, as in systemd (enough for these keys)
    error_name = settings.get("SystemCallErrorNumber", "EPERM")
    error = getattr(errno, error_name)
    if settings.get("SystemCallArchitectures") not in (None, "native"):
        raise SystemExit("seccomp_exec: only SystemCallArchitectures=native is supported")
    calls = allowed_calls(entries, syscall_groups())
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error))

    conditional: set[str] = set()
    families = settings.get("RestrictAddressFamilies", "").split()
    if families:
        conditional.add("socket")
        for family in families:
            _add(flt, seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, int(getattr(socket, family))))
    if settings.get("RestrictNamespaces") == "yes":
        conditional |= {"clone", "clone3", "unshare", "setns"}
        _add(flt, seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEW_FLAGS, 0))
        # glibc falls back to clone() when clone3() says it does not exist.
        _add(flt, seccomp.ERRNO(errno.ENOSYS), "clone3")
    if settings.get("LockPersonality") == "yes":
        conditional.add("personality")
        for value in PERSONALITY_OK:
            _add(flt, seccomp.ALLOW, "personality", seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, value))
    if settings.get("RestrictSUIDSGID") == "yes":
        for name, index in CHMODS:
            if name in calls:
                conditional.add(name)
                _add(flt, seccomp.ALLOW, name, seccomp.Arg(index, seccomp.MASKED_EQ, SUID_SGID, 0))

    allowed = 0
    for name in sorted(calls - conditional):
        allowed += _add(flt, seccomp.ALLOW, name)
    return flt, allowed


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unit", type=Path, required=True, help="the systemd unit file to follow")
    parser.add_argument("--print", action="store_true", help="print the filter (PFC) instead of running")
    parser.add_argument("command", nargs="*")
    args = parser.parse_args(argv)
    text = args.unit.read_text(encoding="utf-8")
    flt, allowed = build_filter(text)
    if args.print:
        print(f"# {allowed} system calls allowed", flush=True)
        flt.export_pfc(sys.stdout)
        return
    if not args.command:
        parser.error("a command to run is required")
    umask = dict(service_entries(text)).get("UMask")
    if umask:
        os.umask(int(umask, 8))
    flt.load()
    os.execvp(args.command[0], args.command)


if __name__ == "__main__":
    main(sys.argv[1:])
