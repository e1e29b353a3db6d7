"""systemd readiness and watchdog notifications over ``NOTIFY_SOCKET`` (sd_notify protocol).

A unit with ``Type=notify`` hands the service the path of an AF_UNIX datagram socket in
``NOTIFY_SOCKET``; the service writes newline-separated ``KEY=VALUE`` assignments to it. A path
starting with ``@`` names a Linux abstract socket (leading NUL byte). Outside systemd there is no
socket and every call is a no-op, so the agent runs the same under a shell or a test.

A notification that fails is logged at WARNING, except one whose socket is gone (nothing bound
there: ``ECONNREFUSED``, ``ENOENT``) once the agent is stopping (``stopping`` was called) or
the process that started it has exited (``edge-agent testbed`` killed: its socket went with it
and the agent stops with it, ``run --parent-pid``): that is the expected end, logged at DEBUG.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import tempfile
from typing import Mapping, Optional

log = logging.getLogger(__name__)

_SOCKET_GONE = (errno.ECONNREFUSED, errno.ENOENT)  # nothing bound at the path (any longer)


class Notifier:
    """Sends sd_notify messages to one socket; does nothing when ``socket_path`` is None."""

    def __init__(self, socket_path: Optional[str]) -> None:
        self.socket_path = socket_path or None
        self._sock = None  # type: Optional[socket.socket]
        self._stopping = False  # set by ``stopping``: a receiver gone since is no fault
        self._parent_pid = os.getppid()  # the starter; another parent: it has exited
        if self.socket_path is not None:
            if not (self.socket_path.startswith("/") or self.socket_path.startswith("@")):
                # systemd only ever passes absolute or abstract paths; anything else is ignored
                # rather than guessed at relative to the working directory.
                log.warning("NOTIFY_SOCKET %r is neither absolute nor abstract; not notifying",
                            self.socket_path)
                self.socket_path = None
            else:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Notifier":
        """Build from a process environment (``NOTIFY_SOCKET``); called once by ``run``."""
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """True when messages actually go somewhere."""
        return self._sock is not None

    def _address(self) -> str:
        assert self.socket_path is not None
        if self.socket_path.startswith("@"):
            return "\0" + self.socket_path[1:]
        return self.socket_path

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; returns False (and logs) when it fails.

        A failed notification must never stop the agent: systemd will notice a missing
        READY or WATCHDOG on its own and act on it.
        """
        if self._sock is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            self._sock.sendto(payload, self._address())
            return True
        except OSError as exc:
            ended = exc.errno in _SOCKET_GONE and (self._stopping
                                                   or os.getppid() != self._parent_pid)
            log.log(logging.DEBUG if ended else logging.WARNING, "sd_notify to %s failed: %s%s",
                    self.socket_path, exc, " (the receiver is gone; this agent is stopping)"
                    if ended else "")
            return False

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up is complete (engines loaded, sockets bound)."""
        lines = ["READY=1", "MAINPID=%d" % os.getpid()]
        if status:
            lines.append("STATUS=" + _one_line(status))
        return self.notify(*lines)

    def watchdog(self) -> bool:
        """Feed the watchdog (call from the main loop's health check, not a timer thread)."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start/stop timeout fires (e.g. TensorRT build)."""
        usec = max(1, int(round(float(seconds) * 1e6)))
        return self.notify("EXTEND_TIMEOUT_USEC=%d" % usec)

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.notify("STATUS=" + _one_line(text))

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down cleanly."""
        self._stopping = True
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Release the datagram socket; further calls become no-ops."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(str(text).split())


NOTIFY_DIR_PREFIX = "edge-notify-"  # a testbed's notify socket folder (agent.testbed.procs)
NOTIFY_SOCKET_NAME = "notify.sock"


def remove_stale_notify_dirs(directory: Optional[str] = None) -> int:
    """Remove the notify socket folders (``edge-notify-*`` in ``directory``, the temporary
    folder by default) that a testbed killed before its clean-up left behind: this user's,
    holding only a socket nothing is bound to (a connect to it is refused). A live testbed's
    socket takes the connect, and a folder whose socket is not made yet holds none: both stay.
    Returns how many were removed."""
    parent = directory or tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(parent) if n.startswith(NOTIFY_DIR_PREFIX)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        folder = os.path.join(parent, name)
        path = os.path.join(folder, NOTIFY_SOCKET_NAME)
        try:
            st = os.lstat(folder)
            if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
                    or os.listdir(folder) != [NOTIFY_SOCKET_NAME]
                    or not stat.S_ISSOCK(os.lstat(path).st_mode)):
                continue
        except OSError:
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
            continue  # bound: a testbed is using it
        except ConnectionRefusedError:
            pass
        except OSError:
            continue
        finally:
            probe.close()
        try:
            os.unlink(path)
            os.rmdir(folder)
            removed += 1
        except OSError:
            pass
    return removed
