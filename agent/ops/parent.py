"""An agent that stops when the process that started it is gone (``run --parent-pid``).

The testbed starts its agents as child processes and stops them itself on Ctrl-C, SIGTERM or
an error. Killed outright (SIGKILL, the kernel's out-of-memory killer) it runs no clean-up, and
its agents would serve on for ever, holding their ports and the cores the next run measures
with. Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) has the kernel send SIGTERM to
the agent when its parent exits: it then drains and stops as under ``systemctl stop``. A
systemd service has no such parent and is not started with the option.

The signal follows the parent *thread* that forked the child, so the parent starts its agents
from a thread that lives as long as they should (the testbed's main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

from agent.errors import UsageError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl_pdeathsig(sig: int) -> str:
    """Ask the kernel for ``sig`` at the parent's exit; "" when done, else why not."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return "this system has no prctl (not Linux)"
    if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return "prctl(PR_SET_PDEATHSIG) failed: %s" % os.strerror(ctypes.get_errno())
    return ""


def stop_with_parent(parent_pid: int) -> str:
    """Have SIGTERM sent to this process when process ``parent_pid``, its parent, exits.

    Raises ``UsageError`` when ``parent_pid`` is not this process's parent (it is gone
    already, or the option names another process: nothing would stop the agent). Returns ""
    when armed, else one line saying why the kernel cannot do it here (the agent then runs
    without it).
    """
    if parent_pid <= 1:
        raise UsageError("--parent-pid %d: give the pid of the process that starts the agent"
                         % parent_pid)
    why = _prctl_pdeathsig(signal.SIGTERM)
    # checked after arming: a parent that exits between the two is seen here, one that exits
    # later gets the signal sent
    if os.getppid() != parent_pid:
        raise UsageError("--parent-pid %d: that process is not this agent's parent (it "
                         "exited before the agent started?)" % parent_pid)
    return why
