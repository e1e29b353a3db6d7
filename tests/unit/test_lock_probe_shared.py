"""A probe that takes a lock only to see whether it is free lets go of it with ``LOCK_UN``,
not by closing: a child forked on another thread at that moment shares the open file, and a
flock belongs to the open file, so the lock outlived the probe until the child had closed what
it inherited (a calibration or an agent starting then was told the lock was held; one CI run
of the doctor's "power mode" test). The forked child is played here by a duplicate of the
probe's descriptor, which is what the child holds."""

from __future__ import annotations

import fcntl as real_fcntl
import json
import os

from agent.node import modeleft
from agent.ops import lockfile
from calibration.modes import ORIGINAL_MODE_FILE
from calibration.runner import RUN_LOCK_FILE


class _ForkedMeanwhile:
    """``fcntl`` as the probe sees it: every lock it takes is also held open by a "child"
    (a duplicate descriptor of the same open file) that outlives the probe."""

    LOCK_EX, LOCK_NB, LOCK_UN, LOCK_SH = (real_fcntl.LOCK_EX, real_fcntl.LOCK_NB,
                                          real_fcntl.LOCK_UN, real_fcntl.LOCK_SH)

    def __init__(self):
        self.children = []

    def flock(self, f, op):
        real_fcntl.flock(f, op)
        if op & real_fcntl.LOCK_EX:
            fd = f if isinstance(f, int) else f.fileno()
            self.children.append(os.dup(fd))

    def close(self):
        for fd in self.children:
            os.close(fd)


def _free(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        real_fcntl.flock(fd, real_fcntl.LOCK_EX | real_fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def test_lockfile_holder_leaves_a_free_lock_free_with_its_file_shared(tmp_path, monkeypatch):
    """Rule: ``lockfile.holder`` on a free lock answers None and leaves it free even while a
    child forked during the probe still holds the probe's open file."""
    path = str(tmp_path / ".lock")
    open(path, "w").close()
    shim = _ForkedMeanwhile()
    monkeypatch.setattr(lockfile, "fcntl", shim)
    try:
        assert lockfile.holder(path, "state_dir", "fix") is None
        assert shim.children, "the probe took no lock"
        assert _free(path), "the probe's lock outlived it"
    finally:
        shim.close()


def test_the_mode_left_probe_leaves_the_run_lock_free_with_its_file_shared(tmp_path, monkeypatch):
    """Rule: the start-up and doctor probe of a calibration's run lock
    (``modeleft.mode_left_text``) finds it free and leaves it free while a child forked during
    the probe still holds the probe's open file: a calibration starting then is not refused,
    and the next probe finds it free too."""
    with open(str(tmp_path / ORIGINAL_MODE_FILE), "w") as f:
        json.dump({"id": 1, "name": "30W"}, f)
    open(str(tmp_path / RUN_LOCK_FILE), "w").close()
    shim = _ForkedMeanwhile()
    monkeypatch.setattr(modeleft, "fcntl", shim)
    try:
        assert modeleft.mode_left_text(str(tmp_path), "CMD") is not None
        assert shim.children, "the probe took no lock"
        assert _free(str(tmp_path / RUN_LOCK_FILE)), "the probe's lock outlived it"
        assert modeleft.mode_left_text(str(tmp_path), "CMD") is not None
    finally:
        shim.close()
