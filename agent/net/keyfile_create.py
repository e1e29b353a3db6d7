"""Making a new CURVE key pair (``edge-agent keys generate``, ``fleet render``): ``NAME.key``
and ``NAME.key_secret`` in ZeroMQ's certificate format, the secret file 0600 from the start. A
new pair goes only where no file is (each file hard-linked to its name, which fails when the
name is taken, also by another run); ``--force`` replaces an old pair only once both new files
are written. Reading and checking key files is ``agent.net.keyfiles``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
from typing import List, Optional, Tuple

from agent.net.keyfiles import SecurityError
# _Staged: the atomic write's temporary, placed here by a link that refuses an existing name
from agent.ops.atomic import _Staged, fsync_dir, remove_kept, write_atomic_all


def generate_keypair(directory: str, name: str, overwrite: bool = False) -> Tuple[str, str]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) in ZeroMQ's certificate format.

    The secret file is created with mode 0600 from the start (never briefly world-readable).
    Returns (public_file, secret_file). Existing files are refused unless ``overwrite``, also
    files another run makes meanwhile (``_link_new_pair``); a replacement writes both files
    before moving either into place: a failed write leaves the old pair as it was, and so does
    a failed move of the public file, the secret one moved before it put back
    (``write_atomic_all``)."""
    import zmq

    if not name or os.sep in name or name.startswith("."):
        raise SecurityError("key name %r must be a plain file name (e.g. the node id)" % name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    public_file = os.path.join(directory, name + ".key")
    secret_file = public_file + "_secret"
    if not overwrite:
        for path in (public_file, secret_file):
            if os.path.exists(path):  # early, before a key is made; _link_new_pair decides
                raise SecurityError(_EXISTS % path)
    public, secret = zmq.curve_keypair()
    now = datetime.datetime.now()
    pair = [(secret_file, _key_text(_SECRET_BANNER.format(now), public, secret), 0o600),
            (public_file, _key_text(_PUBLIC_BANNER.format(now), public, None), 0o644)]
    # either way both are written to temporaries before either is put in place
    (write_atomic_all if overwrite else _link_new_pair)(pair)
    remove_kept(directory, (name + ".key", name + ".key_secret"))  # a killed --force run's
    return public_file, secret_file


_EXISTS = "%s already exists; pass --force to replace it"


def _link_new_pair(files: List[Tuple[str, bytes, int]]) -> None:
    """Put a new pair ``(path, data, perms)`` where no file is, secret first: each is written
    whole to a temporary, then hard-linked to its name, which fails when the name exists, also
    when another run made it after any check (a rename would replace it). A failure removes
    what this run linked, files still its temporaries' inodes, never another run's."""
    staged: List[_Staged] = []
    placed: List[Tuple[str, os.stat_result]] = []
    try:
        for path, data, perms in files:
            staged.append(_Staged(path, "wb", perms))
            staged[-1].file.write(data)
            staged[-1].finish(True)
        for one in staged:
            mine = os.stat(one.tmp)
            try:
                os.link(one.tmp, one.path)
            except FileExistsError:
                raise SecurityError(_EXISTS % one.path) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
                    raise
                raise SecurityError("%s: its file system makes no hard links (%s), by which a new "
                                    "pair is put only where none is: pass --force, or make the "
                                    "pair elsewhere" % (one.path, exc.strerror)) from None
            placed.append((one.path, mine))
        fsync_dir(staged[0].directory)
    except BaseException:
        for path, mine in placed:  # not if another run (--force) has replaced it since
            with contextlib.suppress(OSError):
                if os.path.samestat(os.lstat(path), mine):
                    os.unlink(path)
        raise
    finally:
        for one in staged:
            one.discard()


_SECRET_BANNER = """#   ****  Generated on {0} by edge-agent  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""
_PUBLIC_BANNER = """#   ****  Generated on {0} by edge-agent  ****
#   ZeroMQ CURVE Public Certificate
#   Copy this file to the peers that must accept this node (their allowed_keys).

"""


def _key_text(banner: str, public: bytes, secret: Optional[bytes]) -> bytes:
    text = banner + "metadata\ncurve\n    public-key = \"%s\"\n" % public.decode("ascii")
    if secret is not None:
        text += "    secret-key = \"%s\"\n" % secret.decode("ascii")
    return text.encode("ascii")
