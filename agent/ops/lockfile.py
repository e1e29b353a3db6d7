"""Exclusive ``flock`` locks on a file in a folder: a testbed run's ``RUN/.lock``, an agent's
``<state_dir>/.lock``, calibrate's lock files.

``take`` opens the lock file without blocking or following a link (a FIFO there would hang the
opener, a symbolic link would lock or create a file elsewhere; anything but a regular file is a
one-line ``FileFault`` naming it) and locks it with ``LOCK_EX | LOCK_NB``: a second holder is
refused at once with ``Busy``, carrying what the holder wrote into the file (its pid, say).
The kernel drops an ``flock`` when the last descriptor of its open file closes, so a process
that exits, SIGKILLed too, leaves the file free; the descriptor is close-on-exec, so no child
keeps it past its exec. Until then a child forked on another thread shares the open file and its
lock, so ``holder``, which tells without keeping it whether a lock is held and by whom, lets go
of a lock it took with ``LOCK_UN`` rather than by closing (with another thread starting
processes, 1-5% of such probes left the lock held for a moment after they returned).

Root's lock file in a folder another user owns would stay root's, mode 0644, and that user
could not open it for writing at its next run: ``give_to_folder_owner`` hands it to the
folder's owner, by descriptor (no link race), as a root ``calibrate`` does with its profile;
``folder_owners_filelock`` does so for a ``filelock`` lock (calibrate's profile lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Any, Iterator, Optional

HOLDER_MAX_BYTES = 4096  # what a holder writes: a pid and a name


class Busy(Exception):
    """The lock at ``path`` is held by another process, which wrote ``holder`` there."""

    def __init__(self, path: str, holder: str):
        super().__init__("%s is locked by another process (%s)" % (path, holder or "unknown"))
        self.path = path
        self.holder = holder


def take(path: str, what: str, fix: str) -> int:
    """The descriptor of ``path`` (created 0644 when missing) under an exclusive ``flock``;
    ``Busy`` when another process holds it, ``FileFault`` (``WHAT: PATH is a FIFO; FIX``) when
    it is not a regular file or cannot be opened for writing."""
    from agent.ops.files import open_regular

    fd = open_regular(path, what, os.O_RDWR | os.O_CREAT, 0o644, follow_links=False, fix=fix)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        text = _read(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise Busy(path, text) from None
        raise
    return fd


def write_holder(fd: int, text: str) -> None:
    """Replace what the lock file of ``fd`` holds with ``text`` (who holds it)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8"), 0)


def holder(path: str, what: str, fix: str) -> Optional[str]:
    """What the process holding the lock at ``path`` wrote there ("" when nothing yet), or
    None when no process holds it (or there is no such file). The lock is tried and let go at
    once; a file that is no regular file is a ``FileFault`` as in ``take``."""
    from agent.ops.files import open_regular

    if not os.path.lexists(path):
        return None
    fd = open_regular(path, what, os.O_RDONLY, follow_links=False, fix=fix)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)  # not left to the close (module docstring)
        return None
    finally:
        os.close(fd)


def give_to_folder_owner(fd: int, path: str) -> None:
    """Root's file at ``path`` (open as ``fd``) made the owner's of its folder when that is
    another user, so that user may open it for writing next time; otherwise nothing."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(os.path.dirname(os.path.abspath(path)))
        if owner.st_uid != 0 and os.fstat(fd).st_uid != owner.st_uid:
            os.fchown(fd, owner.st_uid, owner.st_gid)
    except OSError:  # a file system without owners (vfat): nothing to give
        pass


def give_path_to_folder_owner(path: str) -> None:
    """``give_to_folder_owner`` for a lock file another library opened: opened here again
    without following a link or blocking; a missing or odd file is left as it is."""
    if os.geteuid() != 0:
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        import stat

        if stat.S_ISREG(os.fstat(fd).st_mode):
            give_to_folder_owner(fd, path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_owners_filelock(path: str, timeout_s: float) -> Iterator[Any]:
    """A ``filelock.FileLock`` on ``path`` held inside (``filelock.Timeout`` after
    ``timeout_s``), its file given to the folder's owner (``give_path_to_folder_owner``)."""
    import filelock

    with filelock.FileLock(path, timeout=timeout_s) as lock:
        give_path_to_folder_owner(lock.lock_file)
        yield lock


def _read(fd: int) -> str:
    try:
        return os.pread(fd, HOLDER_MAX_BYTES, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
