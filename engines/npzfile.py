"""The one checked reader of numpy files (``.npz`` archives, and ``.npy`` arrays where asked).

Every array is read in full, never with pickles; whatever is wrong with the file (missing,
empty, truncated or corrupt, not numpy's at all, object arrays, a header announcing more than
memory) is one ``UsageError`` line naming the option or field and the path. Kept apart from
``agent.ops`` so that the exit profile, which the pure policy code imports, reads through it.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Dict, Optional

from agent.errors import UsageError


def _open_regular(path: str, what: str) -> int:
    """A read-only descriptor of the regular file ``path``, opened without blocking (a FIFO
    would wait for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError("%s: %s: %s" % (what, path, exc.strerror or exc)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                else "not a regular file")
        raise UsageError("%s: %s is %s; give an .npz file" % (what, path, kind))
    return fd


NPZ_MAGIC, NPY_MAGIC = (b"PK\x03\x04", b"PK\x05\x06"), b"\x93NUMPY"  # numpy's own tests


def load_npz(path: Any, what: str, npy_as: Optional[str] = None) -> Dict[str, Any]:
    """Every array of an ``.npz`` archive, read in full (no pickles): the one checked reader of
    numpy files. With ``npy_as``, a single ``.npy`` array is accepted too, as ``{npy_as: array}``.
    A missing, empty, truncated or corrupt file, one that is not numpy's at all, or one holding
    object arrays is a one-line ``UsageError`` naming ``what``, the path and the fault."""
    import struct
    import zipfile
    import zlib

    import numpy as np

    path = os.fspath(path)
    with os.fdopen(_open_regular(path, what), "rb") as f:
        head = f.read(len(NPY_MAGIC))
        f.seek(0)
        if not head:
            raise UsageError("%s: %s is empty; give an .npz file" % (what, path))
        if head.startswith(NPY_MAGIC) and npy_as is None:
            raise UsageError("%s: %s holds one array (.npy); give an .npz archive of named "
                             "arrays" % (what, path))
        if not head.startswith(NPZ_MAGIC + (NPY_MAGIC,)):
            raise UsageError("%s: %s is not an .npz%s file"
                             % (what, path, "" if npy_as is None else "/.npy"))
        try:
            data = np.load(f, allow_pickle=False)
            if isinstance(data, np.ndarray):
                return {str(npy_as): data}
            with data as z:
                return {name: np.asarray(z[name]) for name in z.files}
        except (OSError, ValueError, EOFError, KeyError, MemoryError, OverflowError, RuntimeError,
                NotImplementedError, struct.error, zipfile.BadZipFile, zlib.error) as exc:
            detail = str(exc) or type(exc).__name__
            if "pickle" in detail:
                raise UsageError("%s: %s holds object arrays, which are refused; store numeric "
                                 "arrays" % (what, path)) from None
            if isinstance(exc, MemoryError):
                detail = "an array larger than memory is announced"
            raise UsageError("%s: %s is truncated or corrupt (%s)"
                             % (what, path, detail.splitlines()[0])) from None
