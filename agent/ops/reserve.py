"""Room kept on a disk for the last writes before exit: a file given back when the disk is full.

A source stopped while its disk is full still holds record lines it could not write, and the
journal lines of the tasks created after the disk filled failed too, so nothing would recover
those tasks at the next start. ``SpareRoom`` holds ``RESERVE_BYTES`` of the disk in a file of
its own, made when the records are opened (skipped where it cannot be made: a disk full
already); ``release`` deletes it, so the final flush at exit has that much room (1 MiB: about
2,600 record lines). It is released at every exit, so the file exists only while the agent
runs (or after a crash, until the next start makes it again).
"""

from __future__ import annotations

import os

RESERVE_BYTES = 1 << 20
_CHUNK = b"\0" * (64 << 10)


class SpareRoom:
    """A file of ``nbytes`` zeros at ``path`` while ``held``."""

    def __init__(self, path: str, nbytes: int = RESERVE_BYTES):
        self.path = path
        self.held = False
        if nbytes <= 0:  # none kept
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                left = nbytes
                while left > 0:  # zeros written, not a sparse file: the blocks are taken now
                    left -= os.write(fd, _CHUNK[:min(left, len(_CHUNK))])
            finally:
                os.close(fd)
            self.held = True
        except OSError:  # no room (or no folder) now: nothing is kept, nothing is left behind
            self._unlink()

    def _unlink(self) -> bool:
        try:
            os.unlink(self.path)
            return True
        except OSError:
            return False

    def release(self) -> bool:
        """Delete the file; True when that gave room back."""
        if not self.held:
            return False
        self.held = False
        return self._unlink()
