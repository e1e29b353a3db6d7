"""The open-file limit of an agent process, raised to what the system allows at start-up.

Every connection takes a descriptor: each peer's DEALER and SUB, each client of a source, every
ZeroMQ monitor, and the agent's files. The usual soft limit of 1024 (systemd's default, and a
login shell's) is the limit a process gets unless it asks for more. Past it what libzmq does
depends on the endpoint (measured, libzmq 4.3.5): a tcp:// connection is not accepted, its I/O
thread spins on the refused accept (a source with 100 clients under a limit of 64 answered 21
of them and could not reconnect to a restarted worker, one core busy; the client socket's
refusals are logged: ``agent.net.acceptwatch``); an ipc:// connection accepted past the limit
makes libzmq abort the whole agent (SIGABRT, ``Too many open files
(src/ipc_listener.cpp:297)``), which a source's ipc:// client endpoint guards against by
holding its path aside near the limit, though a burst of connections can still get past. The
hard limit (systemd: 524288; the shipped unit sets ``LimitNOFILE=65536``) is the process's to
take, so ``raise_open_files`` takes it (capped at ``OPEN_FILES_WANTED``) and warns when even
that stays below ``OPEN_FILES_LOW``; ``warn_client_endpoint`` says what an ipc:// client
endpoint risks then.
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
                    "descriptors, and past the limit tcp:// connections are refused (libzmq "
                    "spinning on a core) and an ipc:// one aborts the agent; raise it "
                    "(LimitNOFILE= in the unit, ulimit -n)", soft, hard)
    return soft, hard


def warn_client_endpoint(endpoint: str, soft: int, guarded: bool, spare_fds: int) -> None:
    """At the bind of a source's ipc:// client ``endpoint`` under the soft limit ``soft`` (0:
    unlimited): a WARNING when that is below ``OPEN_FILES_LOW`` that libzmq aborts the agent
    when clients take every descriptor. ``guarded``: its path is held aside from new clients
    once ``spare_fds`` are left (``agent.net.acceptwatch``); else (an abstract name,
    ``ipc://*``) nothing stops them."""
    if not soft or soft >= OPEN_FILES_LOW:
        return
    guard = ("this agent holds its path aside from new clients once %d descriptors are left, "
             "but a burst of connections can get past that" % spare_fds if guarded else
             "an abstract name or ipc://* has no path to hold aside from new clients")
    log.warning("open-file limit %d for the ipc:// client endpoint %s: libzmq aborts the agent "
                "(SIGABRT, Too many open files) when it accepts a client connection past the "
                "limit (under systemd, clients connecting again crash-loop the unit); %s: "
                "raise it (LimitNOFILE=65536 in the unit, ulimit -n 65536)",
                soft, endpoint, guard)
