"""Append-only files written in whole lines: a write that fails part-way (``ENOSPC``) is cut
back, and a torn last line a crash left is cut off at start-up, so a reader never meets half a
line (a source's records and their journal, ``agent.node.records``)."""

from __future__ import annotations

import os

_TAIL_SCAN_BYTES = 1 << 16


def append_fd(path: str) -> int:
    """An fd appending to ``path`` (made 0644 when missing), not inherited by children."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                   0o644)


def write_whole(fd: int, data: bytes) -> None:
    """Append ``data`` completely or not at all: a short write is cut back, then raised."""
    start = os.lseek(fd, 0, os.SEEK_END)
    done = 0
    try:
        while done < len(data):
            n = os.write(fd, data[done:])
            if n <= 0:
                raise OSError("short write")
            done += n
    except OSError:
        if done:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
        raise


def sync_data(fd: int) -> None:
    """Make the data written to ``fd`` durable (``fdatasync``; ``fsync`` where there is none:
    the file's size, which an append changes, is synced by both)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def cut_torn_tail(path: str) -> int:
    """Remove a last line without its newline (a write cut short by a crash); bytes removed."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(max(0, size - _TAIL_SCAN_BYTES))
        tail = f.read()
        if tail.endswith(b"\n"):
            return 0
        cut = tail.rfind(b"\n")
        keep = (size - len(tail) + cut + 1) if cut >= 0 else (0 if size <= _TAIL_SCAN_BYTES else None)
        if keep is None:  # one enormous line: not ours; leave it
            return 0
        f.truncate(keep)
        return size - keep
