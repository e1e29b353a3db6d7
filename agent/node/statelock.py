"""One agent per ``state_dir``: an exclusive ``flock`` on ``<state_dir>/.lock``.

Two agents on one state directory (a second ``run`` of a running node's config, two nodes
rendered with the same ``state_dir``) would rewrite each other's ``state.json`` and
``stats.json``, and a source's second run would read the running source's journal as a crash
and record its tasks in flight as lost, next to the answers the running source records for
them. ``StateLock`` is taken before anything reads the state directory's files
(``agent.node.build``) and held while the node runs; it holds the pid and node id of its
holder, so a second agent is refused at once (exit 78) with one line naming them. The lock
goes with the process (``agent.ops.lockfile``): a crashed or SIGKILLed agent leaves the state
directory free for its restart. ``doctor --config`` asks ``holder`` (the lock is not kept).
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

from agent.ops import lockfile
from agent.ops.files import FileFault

log = logging.getLogger("agent.run")  # start-up lines keep the command's name

LOCK_FILE = ".lock"
LOCK_FIX = "remove it (the agent locks a regular file there)"


def lock_path(state_dir: str) -> str:
    """The lock file of ``state_dir``."""
    return os.path.join(state_dir, LOCK_FILE)


def in_use_line(state_dir: str, holder: str) -> str:
    """``state_dir: PATH is in use by another agent (pid N, node ID): ...`` from what the
    holder wrote in its lock file."""
    pid, node = parse_holder(holder)
    return ("state_dir: %s is in use by another agent (pid %s, node %s): give each node its "
            "own state_dir" % (state_dir, pid or "unknown", node or "unknown"))


def parse_holder(text: str) -> Tuple[str, str]:
    """(pid, node id) as a holder writes them (``PID NODE_ID``); "" for what is missing."""
    parts = text.split(None, 1)
    pid = parts[0] if parts and parts[0].isdigit() else ""
    return pid, (parts[1].strip() if len(parts) > 1 else "")


class StateLock:
    """The lock of ``state_dir`` held by this process for node ``node_id``; a ``FileFault``
    (exit 78) naming the holder when another process holds it."""

    def __init__(self, state_dir: str, node_id: str):
        self.path = lock_path(state_dir)
        self._fd: Optional[int] = None
        try:
            self._fd = lockfile.take(self.path, "state_dir", LOCK_FIX)
        except lockfile.Busy as busy:
            raise FileFault(in_use_line(state_dir, busy.holder)) from None
        except OSError as exc:  # a file system without locks (ENOLCK): serve, but say so
            log.warning("cannot lock %s (%s): a second agent on this state_dir would not be "
                        "refused; give each node its own state_dir", self.path,
                        exc.strerror or exc)
            return
        lockfile.give_to_folder_owner(self._fd, self.path)  # a root run, then the service's
        try:
            lockfile.write_holder(self._fd, "%d %s\n" % (os.getpid(), node_id))
        except OSError:  # a full disk: the lock holds all the same (its holder unnamed)
            pass

    def close(self) -> None:
        """Let the state directory go (the file stays; what it holds means nothing unlocked)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder(state_dir: str) -> Optional[str]:
    """What the agent holding ``state_dir``'s lock wrote there, or None when none holds it
    (the lock is tried and let go at once)."""
    return lockfile.holder(lock_path(state_dir), "state_dir", LOCK_FIX)
