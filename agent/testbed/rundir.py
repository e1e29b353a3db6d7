"""One folder per testbed run: ``OUT/YYYYmmdd-HHMMSS[-N]``, a ``latest`` link, a lock.

``new_run_dir`` makes the folder with ``os.mkdir`` (atomic: two testbeds started at once with
the same ``--out`` get two folders) and points ``OUT/latest`` at it (replaced atomically).
``RunLock`` holds an exclusive ``flock`` on ``RUN/.lock`` while the run writes there, so a
second writer (or ``report`` of a run in progress) can tell the folder is in use. The lock file
is opened without blocking or following links and must be a regular file (a FIFO or a link
there is refused in one line). ``check_outputs`` says before a run starts whether ``--out``
and ``--json`` can be written (an empty one, or an ``--out`` that is a run folder, cannot).
"""

from __future__ import annotations

import os
import time
from typing import Optional

from agent.errors import UsageError

LOCK_NAME = ".lock"
# the lock file is opened without blocking or following a link (agent.ops.lockfile)
LOCK_FIX = "remove it (the testbed locks a regular file there)"
RUN_INFO = "testbed.json"  # how the run was asked for (topology, mdi mode, ...), for `report`


def check_outputs(out_dir: str, json_path: Optional[str] = None) -> None:
    """Before anything runs: ``--out`` is a folder (or one that can be made) with a UTF-8 name
    (the agents' configs name their files in it) that takes a new folder, and ``--json`` (when
    given) a regular file or none, in an existing folder that takes a new file. A ``UsageError``
    naming the option otherwise, not a traceback after the first (policy, rate)."""
    from agent.config.checks import check_text_path
    from agent.ops.files import check_file_slot, check_output_dir

    if not out_dir.strip():  # abspath("") is the current folder: runs would land among its files
        raise UsageError("--out: empty; give a folder for the runs (default ./testbed-out)")
    out_dir = check_text_path(os.path.abspath(out_dir), "--out", UsageError)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError("--out: %s is a file, not a folder; give a folder for the runs" % out_dir)
    if is_run_dir(out_dir):  # the new run would nest inside an old one, its latest link too
        raise UsageError("--out: %s is a run folder (it holds %s); give the folder the runs go "
                         "in, %s" % (out_dir, RUN_INFO if os.path.exists(os.path.join(
                             out_dir, RUN_INFO)) else LOCK_NAME, os.path.dirname(out_dir)))
    check_output_dir(out_dir, "--out")
    if json_path is not None and not json_path.strip():  # "" would write no file, silently
        raise UsageError("--json: empty; give a file name for the results, or leave --json out")
    if json_path:
        path = os.path.abspath(json_path)
        check_file_slot(path, "--json")
        if not os.path.isdir(os.path.dirname(path)):
            raise UsageError("--json: %s: its folder does not exist" % json_path)
        check_output_dir(os.path.dirname(path), "--json")


def is_run_dir(path: str) -> bool:
    """Whether ``path`` is a run folder itself (its ``testbed.json`` or lock file is there),
    not a folder that holds runs."""
    return any(os.path.isfile(os.path.join(path, name)) for name in (RUN_INFO, LOCK_NAME))


def new_run_dir(out_dir: str, clock=time.time) -> str:
    """Create and return a fresh run folder under ``out_dir``; ``out_dir/latest`` points to it."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError("--out: %s is a file, not a folder; give a folder for the runs" % out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:  # a file on the way, no permission, a read-only file system
        raise UsageError("--out: %s cannot be made: %s" % (out_dir, exc.strerror or exc)) from None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(clock()))
    for n in range(1, 1000):
        path = os.path.join(out_dir, stamp if n == 1 else "%s-%d" % (stamp, n))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:  # no permission, a read-only file system, a full disk
            raise UsageError("--out: cannot make a run folder in %s: %s"
                             % (out_dir, exc.strerror or exc)) from None
        point_latest(out_dir, os.path.basename(path))
        return path
    raise UsageError("--out: cannot make a new run folder under %s" % out_dir)


def point_latest(out_dir: str, name: str) -> None:
    """Make ``out_dir/latest`` a relative symlink to ``name`` (atomically replaced)."""
    link = os.path.join(out_dir, "latest")
    tmp = "%s.%d.tmp" % (link, os.getpid())
    try:
        os.symlink(name, tmp)
        os.replace(tmp, link)
    except OSError:  # a file system without symlinks: the folders are still there
        try:
            os.remove(tmp)
        except OSError:
            pass


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``RUN/.lock``, released on close or exit."""

    def __init__(self, run_dir: str):
        from agent.ops import lockfile

        self.path = os.path.join(run_dir, LOCK_NAME)
        try:
            self._fd: Optional[int] = lockfile.take(self.path, "run lock", LOCK_FIX)
        except lockfile.Busy:
            raise UsageError("%s is in use by another testbed (pid in %s)"
                             % (run_dir, self.path)) from None
        lockfile.write_holder(self._fd, "%d\n" % os.getpid())

    def close(self) -> None:
        """Release the lock (the file stays, empty of meaning)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def in_use(run_dir: str) -> bool:
    """Whether a testbed still holds ``run_dir``'s lock."""
    from agent.ops.lockfile import holder

    return holder(os.path.join(run_dir, LOCK_NAME), "run lock", LOCK_FIX) is not None


def rate_label(total_rate: float) -> str:
    """Folder name of one rate in a policy's folder of a run, e.g. ``rate-30.07``."""
    return "rate-%g" % total_rate
