"""A calibration's locks held by another process, as a running calibration holds them.

A lock the test process took itself is shared with any child forked from it until the child
has closed its inherited descriptors (a flock belongs to the open file, not to the process):
a fork on another thread of the test process at that moment kept the lock held after the test
had let it go. A lock held by a process of its own is let go when that process has exited.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# holds the lock as calibrate does (the run lock through filelock, the board lock through
# calibration.device_lock), says so, and keeps it until its stdin closes
_HOLDER = r"""
import sys
path, kind = sys.argv[1], sys.argv[2]
if kind == "board":
    from calibration import device_lock
    held = device_lock.hold(path)
else:
    import filelock
    held = filelock.FileLock(path, timeout=0)
with held:
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held_elsewhere(path: str, kind: str = "run") -> Iterator[None]:
    """Inside, another process holds the lock at ``path``: the state directory's run lock
    (``kind`` "run") or the board lock ("board"); it has exited, the lock free, after."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, path, kind], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "held":
            proc.wait(timeout=60)
            raise AssertionError("the lock holder did not take %s: %s" % (path, proc.stderr.read()))
        yield
    finally:
        proc.stdin.close()  # it lets go and exits
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
