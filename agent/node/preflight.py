"""The first start-up step of a node (``agent.node.build``, and ``doctor --config``'s "node
files"): the files it reads and writes, checked before anything is loaded.

The state directory must take a new file; ``state.json``, ``stats.json`` and a source's
``records.jsonl`` and journal must be absent or regular files, and the two a source appends to
(and the state directory's lock, ``agent.node.statelock``) writable by this process: after one
run with sudo they are root's in the service user's folder, and the task book's open would
fail with a bare "Permission denied". The bundle's files, the replay set and a worker's
calibration profile must be regular files (a FIFO would block its reader), and the profile a
valid one, read whether or not the worker emulates its capacity (a rehearsal with emulation
refuses the file a real run would). An ``ipc://`` path the node binds must be absent or a
socket: ZeroMQ's bind unlinks whatever is there, so a path naming a file (a typo, another
file of the node's folder) would delete it and start as if nothing were wrong.
"""

from __future__ import annotations

import os
import stat
from typing import Any, List

from agent.node.capacity import require_profile_file
from agent.node.records import JOURNAL_SUFFIX
from agent.net.ipcbind import ipc_path
from agent.node.statelock import lock_path
from agent.ops.files import FileFault, check_file_slot, check_regular_file, check_writable_dir
from agent.ops.state import RECORDS_FILE, STATE_FILE, STATS_FILE


def appended_files(cfg: Any) -> List[str]:
    """The state directory's files the node opens for writing in place (not replaced whole):
    its lock, and a source's records and journal."""
    names = [lock_path(cfg.state_dir)]
    if cfg.role == "source":
        names += [os.path.join(cfg.state_dir, RECORDS_FILE + s) for s in ("", JOURNAL_SUFFIX)]
    return names


def preflight(cfg: Any, create: bool = True) -> str:
    """Raise ``FileFault`` (one line: field, path, fix) for a file the node cannot use; before
    anything is loaded, so a read-only state directory or a FIFO as the replay set is reported
    at once. ``create`` False (``doctor``): a missing state_dir is not made; returns the
    folder it would be made in ("" when it exists)."""
    from agent.ops.doctor_check import files_closed

    check_bind_paths(cfg)
    made_in = check_writable_dir(cfg.state_dir, "state_dir", create)
    slots = [STATE_FILE, STATS_FILE]
    if cfg.role == "source":
        # not records.jsonl.1 (..N): a rotation that finds a non-file there warns and writes on
        slots += [RECORDS_FILE, RECORDS_FILE + JOURNAL_SUFFIX]
    for name in slots:
        check_file_slot(os.path.join(cfg.state_dir, name), "state_dir")
    closed = files_closed(appended_files(cfg))
    if closed:
        raise FileFault("state_dir: " + closed)
    if os.path.isdir(cfg.bundle):  # a FIFO among the bundle's files would block its reader
        for name in sorted(os.listdir(cfg.bundle)):
            check_file_slot(os.path.join(cfg.bundle, name), "bundle", allow_dir=True)
    if cfg.role == "source" and cfg.replay_path:
        check_regular_file(cfg.replay_path, "replay_path")
    if cfg.role == "worker" and cfg.capacity_profile:
        require_profile_file(cfg.capacity_profile)
    return made_in


def check_bind_paths(cfg: Any) -> None:
    """Raise ``FileFault`` for an ``ipc://`` endpoint the node binds whose path holds anything
    but a socket (a socket there is an old run's, replaced, or a live one's, refused at bind)."""
    binds = [("control_bind", cfg.control_bind), ("data_bind", cfg.data_bind)]
    binds += [("client_bind", cfg.client_bind)] if cfg.arrival == "client" else []
    for key, endpoint in binds:
        path = ipc_path(endpoint or "")
        try:
            mode = os.lstat(path).st_mode if path else stat.S_IFSOCK
        except OSError:  # absent, or unreachable: the bind says why
            continue
        if not stat.S_ISSOCK(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a symbolic link"
                    if stat.S_ISLNK(mode) else "a regular file" if stat.S_ISREG(mode)
                    else "another kind of file")
            raise FileFault("%s: %s is %s, not a socket (binding %s deletes the file at its "
                            "path); give the socket a path of its own"
                            % (key, path, kind, endpoint))
