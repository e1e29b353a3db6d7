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

Then what the config and the replay set name is checked against the bundle's manifest (read
without its files' hashes; a bundle that does not load is named by the next step,
``load_bundle``): a peer serving a stage the bundle lacks (a typo would leave that device out
without a word), and a source's replay labels outside the classes of the bundle's heads (every
accuracy figure would be wrong). The replay set is read here once more for its labels.
"""

from __future__ import annotations

import os
import stat
from typing import Any, List, Tuple

from agent.config.checks import check_peer_stages
from agent.errors import UsageError
from agent.node.capacity import require_profile_file
from agent.node.records import JOURNAL_SUFFIX
from agent.net.ipcbind import ipc_path
from agent.node.statelock import lock_path
from agent.ops.files import FileFault, check_file_slot, check_regular_file, check_writable_dir
from agent.ops.samples import check_label_classes, checked_labels
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
    folder it would be made in ("" when it exists). Last, ``check_against_bundle``: a
    ``UsageError`` for a peer's stage or a replay label the bundle does not have."""
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
    check_against_bundle(cfg)
    return made_in


def check_against_bundle(cfg: Any) -> None:
    """Raise ``UsageError`` (one line) for a peer at a stage past the bundle's last, or a
    source's replay labels outside 0..classes-1 of the bundle's heads. A manifest that does
    not load is left to ``load_bundle``, which names its fault."""
    from engines.bundle import BundleError, load_bundle
    from engines.demo import REPLAY_PATH

    try:
        bundle = load_bundle(cfg.bundle, verify_files=False)
    except BundleError:
        return
    check_peer_stages(cfg.peers, bundle.num_stages, bundle.path, UsageError)
    # a Poisson source draws its tasks and their labels from its replay set (the demo set by
    # default); a client source reads it only for the input's shape and scale (labels -1)
    if cfg.role == "source" and cfg.arrival != "client":
        check_replay_labels(cfg.replay_path or REPLAY_PATH, bundle.num_classes,
                            bundle.stage(1).input_shape)


def check_replay_labels(path: str, classes: int, input_shape: Tuple[int, ...]) -> None:
    """Raise ``UsageError`` naming replay_path for labels of the replay set at ``path`` outside
    0..``classes``-1 (-1: no label). A set whose rows are not stage 1's ``input_shape`` or
    without one label per row is left to the replay set's own reader
    (``agent.node.book.ReplaySet``), which names that fault first."""
    from engines.npzfile import load_npz

    data = load_npz(path, "replay_path")
    x, y = data.get("x"), data.get("y")
    if x is None or y is None or x.ndim == 0 or y.ndim != 1 or len(y) != len(x) or (
            tuple(x.shape[1:]) != tuple(input_shape[1:])):
        return
    where = "replay_path: %s" % path
    check_label_classes(checked_labels(y, len(y), where), classes, where)


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
