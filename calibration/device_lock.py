"""The board-wide calibration lock: one run at a time switches a board's power modes.

The run lock in the state directory (``runner.RUN_LOCK_FILE``) only keeps out runs of the same
state directory; a second run with another ``--state-dir`` (root's by hand beside the
service's) would save the first run's switched mode as its "original" and put that back.
This lock lives in ``/run/lock``, which every Debian, Ubuntu and JetPack system has (FHS,
world-writable with the sticky bit), install or not, and which every user who can switch
modes (root, the service user edge-agent) can open. It is an ``flock``: the kernel drops it
when the holder exits, SIGKILL and power cut (tmpfs) included, so nothing stale is left.

The file is opened read-only, and created only when missing (exclusively, mode 0644): a
read-only descriptor takes an ``flock`` just as well, and so a file another user made stays
usable -- ``agent.ops.lockfile.take`` opens for writing, which the kernel's
``protected_regular`` refuses even to root for another user's file in a sticky folder, and
which a read-only ``/run`` (systemd's ``ProtectSystem=strict``) refuses to anyone. The
holder's pid is read from ``/proc/locks``, so nothing needs to be written into the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Iterator, Optional

from agent.errors import UsageError
from agent.ops.files import FileFault, open_regular

DEVICE_LOCK_PATH = "/run/lock/edge-agent-calibrate.lock"

_WHAT = "calibrate's board lock"
_FIX = "remove it (sudo rm) and run calibrate again"


def _open(path: str) -> int:
    """A read-only descriptor of the lock file at ``path``, made (0644) when missing."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):  # FHS's /run/lock, where a bare /run lacks it (as root)
        try:
            os.makedirs(folder, 0o755)
            os.chmod(folder, 0o1777)
        except OSError:
            pass  # creating the file below says why it cannot be made
    for _ in range(2):  # a second try: another run made the file between the two opens
        if os.path.lexists(path):
            return open_regular(path, _WHAT, os.O_RDONLY, follow_links=False, fix=_FIX)
        try:
            fd = open_regular(path, _WHAT, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644,
                              follow_links=False, fix=_FIX)
        except FileFault as exc:
            if os.path.lexists(path):
                continue
            raise UsageError("%s; let this user create files in %s (a systemd unit: "
                             "ReadWritePaths=%s), or run calibrate as root once"
                             % (exc, folder, folder)) from None
        try:
            os.fchmod(fd, 0o644)  # the umask (0027 in the unit) must not shut other users out
        except OSError:
            pass
        return fd
    return open_regular(path, _WHAT, os.O_RDONLY, follow_links=False, fix=_FIX)


def holder_pid(fd: int, locks_path: str = "/proc/locks") -> Optional[int]:
    """The pid of the process holding an ``flock`` on the file open as ``fd`` (from
    ``/proc/locks``: ``N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ...``), None if unknown."""
    st = os.fstat(fd)
    key = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open(locks_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a waiter, not the holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == key:
            try:
                return int(parts[4])
            except ValueError:
                return None
    return None


def busy_text(path: str, pid: Optional[int]) -> str:
    """The one line refusing a run while another one holds the board lock at ``path``."""
    who = "another calibration (pid %d)" % pid if pid is not None else "another calibration"
    return ("%s is switching this board's power modes (%s is locked); wait for it to end or "
            "stop it (the service's: sudo systemctl stop edge-agent-calibrate), then run "
            "calibrate again" % (who, path))


@contextlib.contextmanager
def hold(path: str) -> Iterator[None]:
    """Hold the board lock at ``path`` inside; a held one is a ``UsageError`` (``busy_text``)
    at once, before anything is switched."""
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise UsageError(busy_text(path, holder_pid(fd))) from None
            raise
        yield
    finally:
        os.close(fd)  # closing drops the lock
