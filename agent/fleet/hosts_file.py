"""The hosts file, read as a file (never through the resolver), as the table of names and
addresses ``agent.config.addr_machine`` decides which hosts are one machine by."""

from __future__ import annotations

from typing import Dict, Tuple

from agent.config.addr_machine import HOSTS_FILE, HostsTable, canonical_address

HOSTS_FILE_MAX_BYTES = 1 << 20  # a hosts file is a few lines; more is not read


def read_hosts_table(path: str = HOSTS_FILE) -> HostsTable:
    """The hosts file's names and their canonical addresses ({} when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            text = f.read(HOSTS_FILE_MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return {}
    table: Dict[str, Tuple[str, ...]] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        addr = canonical_address(words[0]) if words else ""
        for name in words[1:] if addr else ():
            known = table.get(name.lower(), ())
            table[name.lower()] = known + (addr,) if addr not in known else known
    return table
