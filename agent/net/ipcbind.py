"""Binding an ``ipc://`` path that a live process serves is refused, not taken over.

ZeroMQ's ipc bind unlinks whatever file is at the path and binds a new socket there, so a
second agent given a running agent's path (a copied config) would start and serve while the
first one, still running, is unreachable: every peer that connects afterwards reaches only
the newcomer, and the first agent is never told. tcp:// refuses such a bind itself
(``EADDRINUSE``), and so does an abstract-namespace name (``ipc://@NAME``: nothing to unlink).

So before an ``ipc://`` path is bound, a plain AF_UNIX stream connect is tried on it. Accepted
(or the listener's backlog full): a process serves there, and the bind fails with
``EADDRINUSE`` as a tcp:// one would (``agent.ops.bindfault.bind_fault`` words it). Refused, no
file, not a socket: a file left by an agent that crashed or stopped (libzmq does not remove
it on close), which ZeroMQ replaces as before, so a restarted agent binds its path again.
A socket this process closed an instant ago can still accept for a few milliseconds (libzmq
closes its listener on another thread): an accepted connect is tried again for up to
``GRACE_S`` before the path is called served.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any

import zmq

PROBE_TIMEOUT_S = 0.25  # one connect: a local socket answers at once, or its backlog is full
GRACE_S = 1.0  # an accepted connect is tried again this long (a listener being closed)
_RETRY_S = 0.02
# a connect that would wait: the backlog of a live listener is full
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINPROGRESS, errno.EALREADY, errno.ETIMEDOUT}


def ipc_path(endpoint: str) -> str:
    """The file an ``ipc://`` endpoint binds; "" for other schemes, the abstract namespace
    (``ipc://@NAME``) and the wildcard (``ipc://*``), which have no file to take over."""
    if not endpoint.startswith("ipc://"):
        return ""
    path = endpoint[len("ipc://"):]
    return "" if not path or path == "*" or path.startswith("@") else path


def served(path: str) -> bool:
    """True when a process listens on the AF_UNIX socket ``path`` (a connect is accepted, or
    would wait on a full backlog); False when refused, absent, not a socket or unreachable."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PROBE_TIMEOUT_S)
        code = probe.connect_ex(path)
    except socket.timeout:
        return True
    except (OSError, ValueError, UnicodeError):  # a path AF_UNIX cannot hold: ZeroMQ says why
        return False
    finally:
        probe.close()
    return code == 0 or code in _BUSY


def aside_path(path: str) -> str:
    """Where a source holds its ipc:// client path aside from new clients near the open-file
    limit (``agent.net.acceptwatch``): ``.NAME.full`` in the same folder."""
    return os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".full")


def refuse_served(endpoint: str, grace_s: float = GRACE_S) -> None:
    """Raise ``zmq.ZMQError(EADDRINUSE)`` when ``endpoint`` is an ``ipc://`` path another
    socket serves, there or held aside (``aside_path``: its agent still listens on it), still
    after ``grace_s``; return otherwise."""
    path = ipc_path(endpoint)
    if not path:
        return
    if served(aside_path(path)):  # probed once: its agent is near its descriptor limit
        raise zmq.ZMQError(errno.EADDRINUSE, "another process serves on %s (its path held "
                                             "aside: %s)" % (path, aside_path(path)))
    deadline = time.monotonic() + grace_s
    while served(path):
        if time.monotonic() >= deadline:
            raise zmq.ZMQError(errno.EADDRINUSE, "another process serves on %s" % path)
        time.sleep(_RETRY_S)


def bind(sock: Any, endpoint: str) -> None:
    """``sock.bind(endpoint)``, refused with ``EADDRINUSE`` when ``endpoint`` is an ``ipc://``
    path a live socket serves (``refuse_served``) instead of unlinking it from under it."""
    refuse_served(endpoint)
    sock.bind(endpoint)
