"""The file shuffle of a records rotation: ``records.jsonl`` -> ``.1`` (-> ``.2`` ...) and a new,
empty ``records.jsonl`` (``agent.node.records`` decides when, and compacts the journal first)."""

from __future__ import annotations

import os
from typing import Tuple


def rotate_files(path: str, keep_files: int) -> Tuple[int, bool]:
    """Rename ``path`` to ``path.1`` (each older one a number up, keeping ``keep_files``) and
    put a new empty file in its place: (an appending fd on the new file, whether the oldest
    kept file was replaced). On ``OSError`` every name is as it was."""
    fresh, renamed = path + ".new", False
    # made first, so a failure leaves every name as it was; O_EXCL: a name left by a crash
    # mid-rotation is removed, and a link or FIFO there is never opened
    if os.path.lexists(fresh):
        os.unlink(fresh)
    fd = os.open(fresh, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
                 | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        kept = ["%s.%d" % (path, i) for i in range(1, keep_files + 1)]
        for older in kept:  # an operator's folder there would be moved along, then stop it
            if os.path.lexists(older) and not os.path.isfile(older):
                raise OSError("%s is not a file: move it away" % older)
        # the oldest kept file, replaced below when the one before it moves onto it
        gone = os.path.lexists(kept[-1]) and (len(kept) == 1 or os.path.lexists(kept[-2]))
        for i in range(keep_files - 1, 0, -1):
            if os.path.lexists(kept[i - 1]):
                os.replace(kept[i - 1], kept[i])
        os.replace(path, path + ".1")
        renamed = True
        os.replace(fresh, path)
    except OSError:
        try:
            if renamed:
                os.replace(path + ".1", path)
        except OSError:
            pass
        os.close(fd)
        try:
            os.unlink(fresh)
        except OSError:
            pass
        raise
    return fd, gone


def remove_past(path: str, keep_files: int) -> int:
    """Delete ``path.N`` for N past ``keep_files`` (left by a larger ``records_keep_files``
    earlier), in order until one is missing or cannot go; how many were deleted."""
    deleted, i = 0, keep_files + 1
    while os.path.lexists("%s.%d" % (path, i)):
        try:
            os.unlink("%s.%d" % (path, i))
        except OSError:
            break
        deleted += 1
        i += 1
    return deleted
