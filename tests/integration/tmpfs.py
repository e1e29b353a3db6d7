"""A small tmpfs mounted for a test (a disk that fills up, or a read-only one).

Mounting needs root and mount permission (CI runs as root); without them the test is skipped
with the reason. The mount is always undone at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Iterator

import pytest


@contextlib.contextmanager
def tmpfs(path: str, size_bytes: int, read_only: bool = False) -> Iterator[str]:
    """Mount a tmpfs of ``size_bytes`` on ``path`` (created) for the ``with`` block."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    os.makedirs(path, exist_ok=True)
    opts = "size=%d,mode=0755%s" % (size_bytes, ",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % (done.stderr.strip() or done.returncode))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def fill(directory: str, name: str = "filler") -> str:
    """Fill the file system of ``directory`` to the last byte; returns the filler's path."""
    path = os.path.join(directory, name)
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
        while True:  # the last partial block
            try:
                if not f.write(b"\0"):
                    break
            except OSError:
                break
    return path
