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
