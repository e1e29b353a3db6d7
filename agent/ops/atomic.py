"""The one atomic file write: a reader sees the old file or the new one, never a torn one.

Every file the project writes for others to read (state, stats, profiles, manifests, keys,
reports, TensorRT plans) goes through here: the data goes to a uniquely named temporary file in
the same directory (so several processes writing the same path never share a temporary name),
is fsynced, renamed over the target, and the directory is fsynced so the rename survives a power
cut (what a Jetson in the field gets). On any error the temporary file is removed and the
target is left as it was. ``write_atomic_all`` does the same for files that belong together
(a key pair): all are written before any is renamed into place, and the old files are kept
until all are, to be put back should a later rename fail.

Permissions: ``perms`` when given (applied exactly, whatever the umask); otherwise those of the
file being replaced; otherwise what ``open`` would give a new file (0o666 less the umask).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from typing import IO, Iterator, List, Optional, Sequence, Tuple, Union

_TEMP_TRIES = 100


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", perms: Optional[int] = None,
                durable: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    ``mode`` is "w" (text, UTF-8) or "wb". ``perms``: the file's permission bits (see the module
    docstring for the default). ``durable=False`` skips both fsyncs, for files that are
    rewritten every few seconds and are only worth having whole, not worth a disk flush.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open: mode must be 'w' or 'wb', got %r" % (mode,))
    staged = _Staged(path, mode, perms)
    try:
        yield staged.file
        staged.finish(durable)
        staged.commit(durable)
    finally:
        staged.discard()


def write_atomic(path: str, data: Union[str, bytes], perms: Optional[int] = None,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (str: UTF-8 text; bytes: as is), atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", perms, durable) as f:
        f.write(data)


def write_atomic_all(files: Sequence[Tuple[str, Union[str, bytes], Optional[int]]],
                     durable: bool = True) -> None:
    """Replace several files that belong together, e.g. a key pair: ``(path, data, perms)``
    each, as ``write_atomic`` does one. Every file is written (and synced) to its temporary
    first and only then are they renamed into place, in order; a failure before the renames
    (a full disk, an error in any one of them) removes every temporary and leaves all the old
    files as they were. Each target already there is kept under a second name (``_keep_old``)
    until every rename succeeded: should a rename fail after another succeeded, the targets
    already replaced get their old file back (one that was not there is removed), so the set
    on disk is the old one or the new one, never a mix (an ``OSError`` saying so); should
    that fail too, ``SetTorn`` says which target holds which file and where an old one is
    kept."""
    staged: List[_Staged] = []
    kept: List[str] = []  # per target: its old file's second name ("": none was there)
    try:
        for path, data, perms in files:
            staged.append(_Staged(path, "wb" if isinstance(data, bytes) else "w", perms))
            staged[-1].file.write(data)
            staged[-1].finish(durable)
        for one in staged:
            kept.append(_keep_old(one.path))
        for one in staged:
            one.commit(durable)
    except BaseException as exc:
        done = [i for i, one in enumerate(staged) if not one.tmp]  # renamed into place
        if done and len(done) < len(staged):  # a mix on disk: undone before anything else
            failed = next(one.path for one in staged if one.tmp)
            said = _put_back(staged, kept, done, failed, exc, durable)
            if said is not None:
                raise said from exc
        raise
    finally:
        for one in staged:
            one.discard()
        for path in kept:  # second names no longer needed ("" once put back or to stay)
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)


class SetTorn(OSError):
    """``write_atomic_all`` left a set mixed: some targets hold new files, others old ones (the
    message says which, and where an old file is kept)."""


_KEPT = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{16}\.old$")  # ``_keep_old``'s second names


def remove_kept(directory: str, names: Sequence[str]) -> None:
    """Remove the old files ``write_atomic_all`` kept beside ``names`` in ``directory`` that a
    killed run (power cut, SIGKILL) left there: a replaced secret key must not stay on disk
    under a hidden name. Call it after a ``write_atomic_all`` of those names succeeded."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        m = _KEPT.match(entry)
        if m and m.group("name") in names:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _keep_old(path: str) -> str:
    """A second name, beside it, for what is at ``path`` ("" when nothing is): a hard link
    (the very file: its owner, permissions and data), else, where the file system makes no
    hard links, a copy (a symbolic link: a new one to the same target)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ""
    directory, name = os.path.split(os.path.abspath(path))
    for _ in range(_TEMP_TRIES):
        keep = os.path.join(directory, ".%s.%s.old" % (name, secrets.token_hex(8)))
        try:
            os.link(path, keep, follow_symlinks=False)
            return keep
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(path), keep)
            return keep
        fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)  # owner-only until its bits are the old file's: it may be a secret
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                os.fchmod(dst.fileno(), stat.S_IMODE(st.st_mode))
                shutil.copyfileobj(src, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(keep)
            raise
        return keep
    raise FileExistsError("no free name to keep %s under in %s" % (name, directory))


def _put_back(staged: List["_Staged"], kept: List[str], done: List[int], failed: str,
              exc: BaseException, durable: bool) -> Optional[OSError]:
    """Undo the renames ``done`` (indexes into ``staged``) after ``exc`` stopped the set at
    ``failed``: each of those targets gets its kept old file back, or is removed when none was
    there (``kept[i]`` emptied for each old file put back, and for one that must stay on disk:
    its target could not get it back).
    Returns the ``OSError`` to raise: for an ``OSError`` ``exc``, that every file is as it was;
    when something could not be undone, which target holds which file; else None."""
    had = [bool(k) for k in kept]
    why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    stuck = {}  # target index -> why it still holds its new file
    for i in reversed(done):
        try:
            if kept[i]:
                os.replace(kept[i], staged[i].path)
                kept[i] = ""
            else:
                os.unlink(staged[i].path)
        except OSError as undo:
            stuck[i] = undo.strerror or str(undo)
    if durable:
        fsync_dir(staged[0].directory)
    code = getattr(exc, "errno", None) or errno.EIO
    if not stuck:
        if not isinstance(exc, OSError):
            return None
        return OSError(code, "%s not put in place (%s); %s: every file is as it was" % (
            failed, why, ", ".join("%s %s" % (staged[i].path, "has its old file back" if had[i]
                                              else "removed (none was there)") for i in done)))
    states = []
    for i, one in enumerate(staged):
        if i in stuck:
            states.append("%s holds the new file%s" % (one.path, " (its old one kept as %s)"
                                                       % kept[i] if kept[i] else ""))
            kept[i] = ""  # the old file's only name now: it stays
        else:
            states.append("%s %s" % (one.path, "holds the old one" if had[i] else
                                     "is not there (nor was it)"))
    return SetTorn(code, "%s not put in place (%s), and undoing the replacements before it "
                         "failed (%s): the files do not belong together: %s" % (
                             failed, why, "; ".join("%s: %s" % (staged[i].path, r)
                                                   for i, r in sorted(stuck.items())),
                             "; ".join(states)))


class _Staged:
    """One file on its way in: a temporary beside ``path`` (``self.file``), then ``finish``
    (flush, fsync, close) and ``commit`` (rename over ``path``); ``discard`` removes whatever
    was not committed."""

    def __init__(self, path: str, mode: str, perms: Optional[int]) -> None:
        self.path = os.fspath(path)
        self.directory = os.path.dirname(os.path.abspath(self.path))
        if perms is None:
            perms = _existing_perms(self.path)
        fd, self.tmp = _create_temp(self.directory, os.path.basename(self.path), perms)
        try:
            if perms is not None:
                os.fchmod(fd, perms)  # exactly these bits: the umask may have removed some
            self.file = os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {}))
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            self.discard()
            raise

    def finish(self, durable: bool) -> None:
        with self.file:
            self.file.flush()
            if durable:
                os.fsync(self.file.fileno())

    def commit(self, durable: bool) -> None:
        os.replace(self.tmp, self.path)
        self.tmp = ""
        if durable:
            fsync_dir(self.directory)

    def discard(self) -> None:
        if hasattr(self, "file"):
            with contextlib.suppress(OSError):
                self.file.close()
        if self.tmp:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = ""


def replace_dir(new: str, path: str, old: str) -> None:
    """Put the folder ``new`` (made beside it) at ``path``: a folder already there is moved to
    ``old`` first and removed once ``new`` is in place, or put back should that move fail; so
    ``path`` holds the old folder or the new one, whole, at every moment but between the two
    renames. A mount point cannot be moved (EBUSY): callers refuse one first
    (``is_mount_point``)."""
    if not os.path.isdir(path):
        os.rename(new, path)
        return
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def is_mount_point(path: str) -> bool:
    """Whether the folder ``path`` is a mount point: ``os.path.ismount``, or (Linux) listed in
    ``/proc/self/mountinfo``, which also knows a bind mount of a folder of the same file
    system (same device as its parent, so ``ismount`` misses it)."""
    if os.path.ismount(path):
        return True
    real = os.fsencode(os.path.realpath(path))
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:  # not Linux, or no /proc: ismount's answer
        return False
    for line in lines:
        fields = line.split(b" ")
        # field 5 is the mount point, with space, tab, newline and backslash written \ooo
        if len(fields) > 4 and re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]),
                                      fields[4]) == real:
            return True
    return False


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


def _existing_perms(path: str) -> Optional[int]:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _create_temp(directory: str, name: str, perms: Optional[int]) -> Tuple[int, str]:
    """A new file ``.<name>.<random>.tmp`` in ``directory``, opened for writing.

    Not ``tempfile.mkstemp``: it creates 0600 files, and working out ``open``'s default would
    mean flipping the process-wide umask, which races with other threads creating files. Here
    the kernel applies the umask to 0o666, as for ``open``. With ``perms`` the file starts
    owner-only, so a secret is never readable by others before its bits are set.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_TRIES):
        tmp = os.path.join(directory, ".%s.%s.tmp" % (name, secrets.token_hex(8)))
        try:
            return os.open(tmp, flags, 0o666 if perms is None else 0o600), tmp
        except FileExistsError:
            continue  # 64 random bits taken already: only if something is very wrong
    raise FileExistsError("no free temporary name for %s in %s" % (name, directory))
