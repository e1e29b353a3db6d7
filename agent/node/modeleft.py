"""A power mode an interrupted calibration left switched: the one wording of it, for
``doctor``'s "power mode" line (``agent.ops.doctor_calib.mode_left_line``) and a worker's
start-up WARNING (``warn_at_start``).

``calibrate`` saves the mode it found to ``STATE_DIR/calibration-original-mode.json``
(``calibration.modes.ORIGINAL_MODE_FILE``) before its first switch and removes the file once
that mode is back. A run SIGKILLed or cut by a power loss in another mode leaves the file, and
the board may still be in a mode it measured: a worker starting then looks up its capacity in
its profile, or times its engine, in that mode without a word. So at its start a worker looks
for the file in its state_dir and in the folder of its ``capacity_profile`` (the state
directory ``calibrate`` wrote it from: ``STATE_DIR/calibration.json``) and logs one WARNING
for each file found, unless a calibration is running: one holding that folder's run lock
(``calibration.runner.RUN_LOCK_FILE``) owns the file, and one holding the board lock
(``calibration.device_lock``) is switching the modes now and puts back the one it found. The
line never stops the agent.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
from typing import Any, List, Optional, Tuple

from agent.ops.paths import as_service_user
from agent.ops.state import PROFILE_NAME
from calibration import device_lock
from calibration.modes import ORIGINAL_MODE_FILE

log = logging.getLogger("agent.run")  # the start-up lines keep the command's name


def mode_left_text(state_dir: str, calibrate_cmd: str) -> Optional[Tuple[str, str]]:
    """(what, fix) where ``state_dir`` holds the mode a calibration saved and no calibration
    holds that directory's run lock (the file is then no running one's); None otherwise.
    ``calibrate_cmd`` is the fix: calibrate restores the saved mode before it measures."""
    from calibration.runner import RUN_LOCK_FILE

    path = os.path.join(state_dir, ORIGINAL_MODE_FILE)
    if not os.path.isfile(path):
        return None
    try:  # a calibration under way holds its lock: the file is its own
        with open(os.path.join(state_dir, RUN_LOCK_FILE), "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # let go at once: a child forked meanwhile shares the open file (and the lock)
            # until it has closed what it inherited, and a calibration starting must not wait
            fcntl.flock(lock, fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            saved = json.load(f)
        mode = "%s (id %d)" % (saved.get("name"), saved["id"])
        by_hand = " (or sudo nvpmodel -m %d)" % saved["id"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        mode, by_hand = "its saved mode (unreadable)", ""
    return ("%s: a calibration ended without restoring the power mode it found, %s; the board "
            "may still be in a mode it measured, and agents time their engine or look up their "
            "capacity in that mode" % (path, mode),
            "%s restores it before it measures%s" % (calibrate_cmd, by_hand))


def board_lock_held(path: str) -> bool:
    """True while a calibration holds the board lock at ``path``; read from ``/proc/locks``
    without taking the lock (a calibration starting at that instant must not find the board
    busy). A lock file that is missing or cannot be opened is not held."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return device_lock.holder_pid(fd) is not None
    finally:
        os.close(fd)


def calibration_dirs(cfg: Any) -> List[str]:
    """The folders a worker's calibration state may be in: its state_dir and the folder of its
    ``capacity_profile`` (each once)."""
    dirs = [cfg.state_dir]
    if cfg.capacity_profile:
        dirs.append(os.path.dirname(os.path.abspath(cfg.capacity_profile)))
    seen: List[str] = []
    for d in dirs:
        if os.path.realpath(d) not in [os.path.realpath(s) for s in seen]:
            seen.append(d)
    return seen


def warn_at_start(cfg: Any) -> int:
    """Log one WARNING (``mode_left_text``'s words) for each of a worker's calibration folders
    holding a saved mode no running calibration owns; returns how many. Nothing for a source,
    nor while a calibration holds the board lock; a fault reading is no fault of the start."""
    if cfg.role != "worker":
        return 0
    try:
        if board_lock_held(device_lock.DEVICE_LOCK_PATH):
            return 0
        lines = []
        for folder in calibration_dirs(cfg):
            cmd = "edge-agent calibrate --bundle %s --state-dir %s" % (
                shlex.quote(cfg.bundle), shlex.quote(folder))
            found = mode_left_text(folder, as_service_user(
                cmd, os.path.join(folder, PROFILE_NAME)))
            if found is not None:
                lines.append(found)
    except Exception as exc:  # a warning only: the agent starts whatever this finds
        log.debug("saved power mode not checked: %s: %s", type(exc).__name__, exc)
        return 0
    for what, fix in lines:
        log.warning("%s; %s", what, fix)
    return len(lines)
