"""The processes running on this machine, read from /proc (tests that check none is left)."""

from __future__ import annotations

import os
from typing import List, Union


def pids_with(fragment: Union[str, bytes], unless_starts: bytes = b"") -> List[int]:
    """Pids of the processes whose command line (arguments joined by spaces) holds
    ``fragment``, leaving out those whose command line starts with ``unless_starts``."""
    want = fragment.encode() if isinstance(fragment, str) else fragment
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if want in cmd and not (unless_starts and cmd.startswith(unless_starts)):
            out.append(int(name))
    return out


# /proc/net/tcp states, for the lines of a socket report
_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
               "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
               "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def tcp_sockets_on(port: int) -> List[str]:
    """Every TCP socket on this machine whose local port is ``port``: its state, local and
    remote address and the processes holding it (pid and command), read from /proc: what a
    test says when a port it expected free is not."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "r", encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found[cols[9]] = "%s %s -> %s" % (_TCP_STATES.get(cols[3], cols[3]), cols[1],
                                                  cols[2])
    holders = {inode: [] for inode in found}
    for name in (n for n in os.listdir("/proc") if n.isdigit()) if found else ():
        try:
            fds = os.listdir("/proc/%s/fd" % name)
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%s/fd/%s" % (name, fd))
            except OSError:  # closed meanwhile (the listing's own descriptor among them)
                continue
            inode = link[len("socket:["):-1] if link.startswith("socket:[") else None
            if inode in holders:
                holders[inode].append("%s %s" % (name, cmd))
    return ["%s (inode %s, held by %s)" % (line, inode, holders[inode] or "no process")
            for inode, line in found.items()]
