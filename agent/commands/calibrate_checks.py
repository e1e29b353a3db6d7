"""What ``edge-agent calibrate`` checks of its profile's place before it measures, and how it
words a write that failed.

A run takes minutes (a TensorRT build, a mode switch, ``--seconds`` per stage and mode) before
its first write, so the profile path is checked first: a folder that is a file, a file system
that is read-only, a user without write access, or less free space than ``MIN_FREE_BYTES``
plus the profile's own size (each write makes a whole new copy beside the old one) are
refused, naming the option the path came from (``--profile``, or ``--state-dir`` for
``STATE_DIR/calibration.json``) and the path. ``write_fault`` words an ``OSError`` by its cause,
each with its own fix: a full file system wants space freed there, not another user.
"""

from __future__ import annotations

import errno
import os
from typing import Optional, Tuple

from agent.errors import UsageError
from agent.ops.files import FileFault, check_output_dir, check_output_file, free_bytes

MIN_FREE_BYTES = 1024 * 1024  # entries are ~1 kB: a file system with less than this is full
SERVICE_USER_FIX = "run as a user that can (the service user: sudo -u edge-agent ...)"


def nearest_folder(path: str) -> str:
    """The folder ``path`` goes in, or the nearest existing one above it (what calibrate
    makes the rest of)."""
    here = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    return here


def _size(n_bytes: float) -> str:
    for unit, scale in (("GiB", 1024.0 ** 3), ("MiB", 1024.0 ** 2), ("KiB", 1024.0)):
        if n_bytes >= scale:
            return "%.1f %s" % (n_bytes / scale, unit)
    return "%d bytes" % n_bytes


def write_fault(exc: OSError, folder: str) -> Tuple[str, str]:
    """(cause, fix) of a write in ``folder`` that failed with ``exc``."""
    code = exc.errno
    if code == errno.EROFS:
        return ("%s is on a read-only file system" % folder,
                "give a --state-dir (or --profile) on a writable one")
    if code == errno.ENOSPC:
        return ("the file system holding %s is full" % folder,
                "free space there (df -h %s) and calibrate again" % folder)
    if code == getattr(errno, "EDQUOT", -1):
        return ("this user's disk quota on the file system holding %s is used up" % folder,
                "free space there (quota -s) and calibrate again")
    if code in (errno.EACCES, errno.EPERM):
        return ("%s: permission denied" % folder, SERVICE_USER_FIX)
    return ("%s: %s" % (folder, exc.strerror or exc), "give another --profile or --state-dir")


def check_profile_place(profile_path: str, what: str, state_dir: Optional[str] = None) -> None:
    """``UsageError`` (one line naming ``what``, the option the path came from, and the path)
    unless calibrate can write ``profile_path``: see the module docstring. ``state_dir``, when
    it is not the profile's folder, must take a new file too (the run's lock goes there)."""
    try:
        check_output_file(profile_path, what, probe=False)
    except FileFault as exc:
        raise UsageError("%s; calibrate writes its measurements there: give another --profile "
                         "or --state-dir" % exc)
    folders = [nearest_folder(profile_path)]
    if state_dir and os.path.abspath(state_dir) != folders[0]:
        folders.append(os.path.abspath(state_dir))
    for folder in folders:
        probe = os.path.join(folder, ".write-probe.%d" % os.getpid())
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            cause, fix = write_fault(exc, folder)
            which = "the profile %s" % profile_path if folder == folders[0] else "its run lock"
            raise UsageError("%s: cannot write %s: %s; %s" % (
                what if folder == folders[0] else "--state-dir", which, cause, fix))
    folder = folders[0]
    size = os.path.getsize(profile_path) if os.path.isfile(profile_path) else 0
    free = free_bytes(folder)
    if free is not None and free < MIN_FREE_BYTES + size:
        raise UsageError("%s: cannot write the profile %s: the file system holding %s has %s "
                         "free, less than the %s a write needs; free space there (df -h %s) "
                         "or give another --state-dir or --profile" % (
                             what, profile_path, folder, _size(free), _size(MIN_FREE_BYTES + size),
                             folder))


def make_state_dir(state_dir: str) -> None:
    """Make the state directory (the run's lock and saved power mode go there), or refuse, in
    one line naming ``--state-dir`` (the option to change, whether given or defaulted), a path
    that is a file or below one, and a folder that cannot be made, by its cause."""
    try:
        check_output_dir(state_dir, "--state-dir", probe=False)
    except FileFault as exc:
        raise UsageError("%s; give another --state-dir" % exc)
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as exc:
        cause, fix = write_fault(exc, nearest_folder(state_dir))
        raise UsageError("--state-dir: cannot create %s: %s; %s" % (state_dir, cause, fix))
