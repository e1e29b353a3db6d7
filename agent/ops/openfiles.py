"""The open-file limit of an agent process, raised to what the system allows at start-up.

Every connection takes a descriptor: each peer's DEALER and SUB, each client of a source, every
ZeroMQ monitor, and the agent's files. The usual soft limit of 1024 (systemd's default, and a
login shell's) is the limit a process gets unless it asks for more; past it ZeroMQ cannot
accept a connection, says nothing, and its I/O thread spins on the refused accept (measured:
a source with 100 clients under a limit of 64 answered 21 of them and could not reconnect to
a restarted worker, one core busy). The hard limit (systemd: 524288) is the process's to
take, so ``raise_open_files`` takes it (capped at ``OPEN_FILES_WANTED``) and warns when even
that stays below ``OPEN_FILES_LOW``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

log = logging.getLogger(__name__)

OPEN_FILES_WANTED = 65536  # descriptors asked for: far more than any fleet's connections
OPEN_FILES_LOW = 4096  # below this after raising, a WARNING: a busy source may run out


def raise_open_files(resource_module: Optional[Any] = None) -> Tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` towards the hard one; (soft, hard) as they are after.
    ``resource_module``: the stdlib ``resource`` (None: imported; absent off Unix: no-op)."""
    try:
        resource = resource_module or __import__("resource")
    except ImportError:  # not Unix
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < top:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
            soft = top
        except (ValueError, OSError) as exc:  # a container's ceiling below the hard limit
            log.debug("cannot raise the open-file limit to %d: %s", top, exc)
    if soft != resource.RLIM_INFINITY and soft < OPEN_FILES_LOW:
        log.warning("open-file limit %d (hard %d): every peer and client connection takes "
                    "descriptors, and past the limit connections are refused without a word; "
                    "raise it (LimitNOFILE= in the unit, ulimit -n)", soft, hard)
    return soft, hard
