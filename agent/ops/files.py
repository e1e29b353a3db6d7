"""Start-up checks of the files an agent reads and writes, and the bookkeeping of write faults.

Reading: ``read_bounded`` opens a file with ``O_NONBLOCK`` (``open_regular``) and refuses
anything that is not a regular file (a FIFO would block ``open`` until a writer came; a device
could be read forever) and anything larger than the caller's limit, so a key or config file can
never hang the agent or fill its memory. ``check_regular_file`` does the same by ``stat`` for
files another library opens (numpy, onnxruntime).

Writing: ``check_writable_dir`` makes sure a state directory exists, is a directory and takes a
new file (a read-only mount, a file in its place or a link to a card not mounted is found before
the agent says READY), and ``check_file_slot`` that a path the agent will write is free or a
regular file.
For the commands' output options, ``check_output_file`` and ``check_output_dir`` say before any
work is done whether a file (or a folder, created if missing) can be written there, creating
nothing that outlives the check, and ``output_errors`` turns an ``OSError`` at a write site into
a ``FileFault`` naming the option and the path.

``WriteFaults`` counts failed writes of one kind (``records``, ``journal``, ``state``) and logs
the first failure and then at most once per ``log_interval_s``, and once more when writing works
again: a full disk must neither stop the agent nor flood its journal.

Every error is a ``FileFault`` (a ``UsageError``) naming the config field, the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from typing import Callable, Iterator, Optional, Tuple

from agent.errors import UsageError

log = logging.getLogger("agent.run")

KEY_FILE_MAX_BYTES = 64 * 1024  # a ZeroMQ certificate is ~300 bytes
CONFIG_MAX_BYTES = 4 * 1024 * 1024  # a node config is a few kB


class FileFault(UsageError):
    """A file or directory the agent needs is missing, of the wrong kind or unusable."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_regular_file(path: str, what: str) -> None:
    """Raise ``FileFault`` unless ``path`` is an existing regular file (``what`` names it)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise FileFault("%s: %s: %s" % (what, path, _reason(exc))) from None
    if not stat.S_ISREG(st.st_mode):
        raise FileFault("%s: %s is %s; give a regular file" % (what, path, _kind(st.st_mode)))


def open_regular(path: str, what: str, flags: int = os.O_RDONLY, mode: int = 0o644,
                 follow_links: bool = True, fix: str = "give a regular file") -> int:
    """``os.open(path, flags, mode)`` that never blocks and returns only a regular file's
    descriptor: ``O_NONBLOCK`` (a FIFO would block the open until a writer came), with
    ``follow_links=False`` also ``O_NOFOLLOW`` (a symbolic link is refused, even with
    ``O_CREAT``), then ``fstat``. Anything else is a one-line ``FileFault``: ``WHAT: PATH is a
    FIFO; FIX``."""
    flags |= (getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
              | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0)))
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        kind = {errno.ENXIO: "a socket",  # O_NONBLOCK open of a socket file
                errno.ELOOP: "a symbolic link", errno.EISDIR: "a directory"}.get(exc.errno or 0)
        if kind is not None and (exc.errno != errno.ELOOP or not follow_links):
            raise FileFault("%s: %s is %s; %s" % (what, path, kind, fix)) from None
        raise FileFault("%s: %s: %s" % (what, path, _reason(exc))) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise FileFault("%s: %s: %s" % (what, path, _reason(exc))) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileFault("%s: %s is %s; %s" % (what, path, _kind(st.st_mode), fix))
    return fd


def read_bounded(path: str, what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, read without ever blocking; at most ``max_bytes``.

    A FIFO, device, socket or directory, an unreadable or a larger file raises ``FileFault``.
    """
    fd = open_regular(path, what)
    try:
        st = os.fstat(fd)
        if st.st_size > max_bytes:
            raise FileFault("%s: %s is %d bytes, more than the %d this file can be"
                            % (what, path, st.st_size, max_bytes))
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise FileFault("%s: %s grew past %d bytes while being read" % (what, path, max_bytes))
        return data
    except OSError as exc:
        raise FileFault("%s: %s: %s" % (what, path, _reason(exc))) from None
    finally:
        os.close(fd)


def read_text(path: str, what: str, max_bytes: int) -> str:
    """``read_bounded``, decoded as UTF-8; binary bytes are a ``FileFault`` too."""
    raw = read_bounded(path, what, max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFault("%s: not a UTF-8 text file (byte %d)" % (path, exc.start)) from None


def check_writable_dir(path: str, what: str, create: bool = True) -> str:
    """Create ``path`` if needed and make sure a file can be created in it (``FileFault`` if not).

    ``create`` False (a check that must leave nothing behind, as ``doctor`` is): a missing
    ``path`` is not made; its nearest existing parent must be a directory in which one can be
    made instead. Returns that parent, or "" when ``path`` exists."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        dangling = link_to_nothing(path)
        if dangling is not None:  # makedirs would say "File exists", doctor "can be made"
            raise FileFault("%s: %s is a link to nothing (%s): mount or create %s"
                            % (what, dangling[0], dangling[1], dangling[1])) from None
        if not create:
            return _creatable_in(path, what)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise FileFault("%s: cannot create directory %s: %s%s"
                            % (what, path, _reason(exc), _dir_fix(path, what, exc))) from None
        st = os.stat(path)
    except OSError as exc:
        raise FileFault("%s: %s: %s%s" % (what, path, _reason(exc),
                                          _dir_fix(path, what, exc))) from None
    if not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
        raise FileFault("%s: %s is %s, not a directory; move it away or point %s elsewhere"
                        % (what, path, kind, what))
    _probe(path, what, make_dir=False)
    return ""


def _dir_fix(path: str, what: str, exc: OSError) -> str:
    """The fix for a directory ``path`` that cannot be made or reached (`` (...)``, or "")."""
    if exc.errno == errno.ENOTDIR:  # a parent is a file: named, as the error does not
        parent = os.path.dirname(os.path.abspath(path))
        while parent != os.path.dirname(parent) and (os.path.isdir(parent)
                                                     or not os.path.lexists(parent)):
            parent = os.path.dirname(parent)  # (below a file nothing exists: one is found)
        return " (a parent%s is a file: move it or point %s elsewhere)" % (
            ", %s," % parent if not os.path.isdir(parent) else "", what)
    if exc.errno == errno.EROFS:
        return " (point %s at a writable folder)" % what
    if exc.errno in (errno.EACCES, errno.EPERM):
        return " (give the agent's user write access, or point %s at a writable folder)" % what
    return ""


def link_to_nothing(path: str) -> Optional[Tuple[str, str]]:
    """(link, target) when the missing ``path``, or the nearest of its folders that is there,
    is a symbolic link whose target is missing (an SD card's mount point while it is not
    mounted); else None. The target is the link's, resolved as far as the links go."""
    here = os.path.abspath(path)
    while not os.path.lexists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    if os.path.islink(here) and not os.path.exists(here):
        return here, os.path.realpath(here)
    return None


def _creatable_in(path: str, what: str) -> str:
    """The nearest existing parent of the missing ``path``, checked to take a new directory
    (a probe directory made and removed at once), as ``os.makedirs(path)`` would need."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise FileFault("%s: cannot create directory %s: %s is not a directory"
                        % (what, path, parent))
    try:
        _probe(parent, what, make_dir=True)
    except FileFault as exc:
        raise FileFault("%s (to create %s)" % (exc, path)) from None
    return parent


def _probe(path: str, what: str, make_dir: bool) -> None:
    """Create and remove a file (or, with ``make_dir``, a folder) in the directory ``path``."""
    probe = os.path.join(path, ".write-probe.%d" % os.getpid())
    try:
        if make_dir:
            os.mkdir(probe, 0o700)
            os.rmdir(probe)
        else:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        fix = (" (it is on a read-only file system)" if exc.errno == errno.EROFS
               else " (give the agent's user write access)"
               if exc.errno in (errno.EACCES, errno.EPERM) else "")
        raise FileFault("%s: cannot %s in %s: %s%s" % (
            what, "create a directory" if make_dir else "write", path, _reason(exc), fix)) from None


def check_file_slot(path: str, what: str, allow_dir: bool = False) -> None:
    """``path`` (a file the agent writes or reads) must be absent or a regular file (or, with
    ``allow_dir``, a directory), else ``FileFault``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileFault("%s: %s: %s" % (what, path, _reason(exc))) from None
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise FileFault("%s: %s is a dangling link: %s" % (what, path, _reason(exc))) from None
    if not stat.S_ISREG(st.st_mode) and not (allow_dir and stat.S_ISDIR(st.st_mode)):
        raise FileFault("%s: %s is %s; the agent needs a regular file there: move it away"
                        % (what, path, _kind(st.st_mode)))


def check_output_dir(path: str, what: str, probe: bool = True) -> None:
    """``path``, a folder a command writes into (making it and its parents when missing), can be
    used: it is a directory that takes a new file, or the nearest existing folder above it is a
    directory that takes a new one. ``probe=False`` (a dry run) only looks. Leaves nothing
    behind; ``FileFault`` naming ``what`` and the path otherwise."""
    if not path:
        raise FileFault("%s: give a path" % what)
    here, missing = os.path.abspath(path), None
    while True:
        try:
            st = os.stat(here)
            break
        except (FileNotFoundError, NotADirectoryError) as exc:
            if os.path.islink(here):
                raise FileFault("%s: %s is a dangling link" % (what, here)) from None
            if isinstance(exc, FileNotFoundError):
                missing = here
            here = os.path.dirname(here)
        except OSError as exc:
            raise FileFault("%s: %s: %s" % (what, path, _reason(exc))) from None
    if not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
        raise FileFault("%s: %s is %s, not a directory" % (what, here, kind))
    if probe:
        _probe(here, what, make_dir=missing is not None)


def refuse_input_as_out(out: str, inputs) -> None:
    """Refuse an ``--out`` that is one of the command's own input files, given as ``(option,
    path)`` pairs (a link to one counts): the write would replace what the command read, a
    data set or a backbone lost for good. One ``FileFault`` line naming both options."""
    real = os.path.realpath(out)
    for option, path in inputs:
        if path and os.path.realpath(path) == real:
            raise FileFault("--out %s is the %s file: write to another file, so that %s stays "
                            "as it is" % (out, option, path))


def check_output_file(path: str, what: str, probe: bool = True) -> None:
    """``path``, a file a command writes whole (atomically, making its folder when missing), can
    be written: it is absent or a regular file, in a folder ``check_output_dir`` accepts. A
    directory is refused, never given an extension. ``FileFault`` naming ``what`` otherwise."""
    if not path or path.endswith(("/", os.sep)):
        raise FileFault("%s: %r names a directory; give a file path" % (what, path))
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            raise FileFault("%s: %s is a dangling link" % (what, path)) from None
        st = None
    except OSError as exc:
        raise FileFault("%s: %s: %s" % (what, path, _reason(exc))) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise FileFault("%s: %s is a directory; give a file path" % (what, path))
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise FileFault("%s: %s is %s; give a regular file path" % (what, path, _kind(st.st_mode)))
    check_output_dir(os.path.dirname(os.path.abspath(path)), what, probe)


def first_missing_dir(path: str) -> Optional[str]:
    """The outermost of the folder ``path`` and its parents that does not exist yet (None when
    ``path`` exists): what ``os.makedirs(path)`` would make first, so a command that fails
    after making it can remove what it made and nothing else."""
    here, missing = os.path.abspath(path), None
    while not os.path.lexists(here):
        missing, parent = here, os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return missing


@contextlib.contextmanager
def output_errors(what: str, path: str) -> Iterator[None]:
    """Inside, an ``OSError`` (a write that failed) becomes ``FileFault``: ``WHAT: cannot write
    PATH: reason`` (``path``: what the caller was writing, not a temporary file's name)."""
    try:
        yield
    except OSError as exc:
        raise FileFault("%s: cannot write %s: %s" % (what, path, _reason(exc))) from None


class WriteFaults:
    """Failed writes of one kind: counted, logged at most once per ``log_interval_s``."""

    def __init__(self, what: str, log_interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_count: Optional[Callable[[str, int], None]] = None) -> None:
        self.what = what
        self.log_interval_s = log_interval_s
        self.clock = clock
        self.on_count = on_count  # e.g. a metrics counter: called with (what, n)
        self.failures = 0  # write attempts that failed, in all
        self.failing = False  # the last attempt failed
        self._last_log = -1e18
        self._since_log = 0

    def failed(self, exc: BaseException, detail: str = "") -> None:
        """Count one failed write; log it when the last log line is old enough."""
        self.failures += 1
        self._since_log += 1
        self.failing = True
        if self.on_count is not None:
            self.on_count(self.what, 1)
        now = self.clock()
        if now - self._last_log >= self.log_interval_s:
            log.warning("cannot write %s: %s%s (%d failure(s) since the last report; next report "
                        "in %.0f s at the earliest; the agent keeps serving)", self.what, exc,
                        detail, self._since_log, self.log_interval_s)
            self._last_log, self._since_log = now, 0

    def succeeded(self) -> None:
        """A write worked: say so once after failures."""
        if self.failing:
            self.failing = False
            log.warning("writing %s works again after %d failure(s) in all", self.what,
                        self.failures)


def free_bytes(folder: str, as_root: Optional[bool] = None) -> Optional[float]:
    """Bytes this user (``as_root``: root, or another user, whoever runs this) may still write
    on the file system holding ``folder`` (root may also use the blocks reserved for it); None
    when the file system does not say (statvfs fails, or reports no blocks at all, as some
    FUSE mounts do): the write probe decides alone."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if not st.f_blocks:
        return None
    blocks = st.f_bfree if (os.geteuid() == 0 if as_root is None else as_root) else st.f_bavail
    return float(blocks) * st.f_frsize
