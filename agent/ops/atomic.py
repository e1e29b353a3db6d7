"""The one atomic file write: a reader sees the old file or the new one, never a torn one.

Every file the project writes for others to read (state, stats, profiles, manifests, keys,
reports, TensorRT plans) goes through here: the data goes to a unique temporary file in the same
directory (so several processes writing the same path never share a temporary name), is
fsynced, renamed over the target, and the directory is fsynced so the rename survives a power
cut (what a Jetson in the field gets). On any error the temporary file is removed and the
target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator, Optional, Union


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", perms: Optional[int] = None,
                durable: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    ``mode`` is "w" (text, UTF-8) or "wb". ``perms`` sets the file's permission bits (default:
    0o644 less the umask, like ``open``). ``durable=False`` skips both fsyncs, for files that
    are rewritten often and are only worth having whole, not worth a disk flush.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open: mode must be 'w' or 'wb', got %r" % (mode,))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        if perms is None:
            umask = os.umask(0)
            os.umask(umask)
            perms = 0o644 & ~umask
        os.fchmod(fd, perms)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            fd = -1  # owned by f now
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = ""
        if durable:
            fsync_dir(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_atomic(path: str, data: Union[str, bytes], perms: Optional[int] = None,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (str: UTF-8 text; bytes: as is), atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", perms, durable) as f:
        f.write(data)


def fsync_dir(directory: str) -> None:
    """Make a rename or creation in ``directory`` durable (a no-op where unsupported)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
