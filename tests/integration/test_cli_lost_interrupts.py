"""An interrupt Python could not raise, because it came while a weakref callback, a ``__del__``
or a gc callback ran (Python prints "Exception ignored in ..." and goes on as if no signal had
come), still ends the command, or an agent's start-up: the entry point sends it again. Real processes, real signals;
the callback that swallows the interrupt is forced, where a real Ctrl-C meets it by chance
(importlib's module-lock callback, at 0.15 s into a testbed's start on a loaded machine)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology
from tests.unit.processes import pids_with

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_S = 120  # generous for a loaded machine; each run ends well before when the rule holds

# a program that installs the hook, then loses an interrupt in a weakref callback and sleeps:
# only the interrupt sent again ends the sleep
LOST_IN_CALLBACK = r"""
import signal, sys, time, weakref
from agent.__main__ import resend_lost_interrupts
from agent.commands.interrupts import Terminated, as_interrupts

class Thing:
    pass

def callback(_ref):
    raise %s()

sys.unraisablehook = resend_lost_interrupts(sys.unraisablehook)
with as_interrupts((signal.SIGTERM,)):
    try:
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs here; what it raises Python cannot raise
        time.sleep(%d)
        print("slept through")
    except KeyboardInterrupt as exc:
        print("raised", type(exc).__name__)
"""


def _run(code: str):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=WAIT_S * 2)
    return p.returncode, p.stdout, p.stderr


def test_an_interrupt_lost_in_a_callback_is_raised_again_without_a_traceback():
    """Rule: a KeyboardInterrupt (or the Terminated SIGTERM raises) that leaves a weakref
    callback is sent again as its signal and raised in the main thread's own code; nothing
    is printed for the lost one."""
    for kind in ("KeyboardInterrupt", "Terminated"):
        rc, out, err = _run(LOST_IN_CALLBACK % (kind, WAIT_S))
        assert (rc, out.strip()) == (0, "raised " + kind), (kind, rc, out, err)
        assert "Exception ignored" not in err and "Traceback" not in err, (kind, err)


ENDED_MEANWHILE = r"""
import sys, time, weakref
from agent.__main__ import resend_lost_interrupts

class Thing:
    pass

def callback(_ref):
    raise KeyboardInterrupt()

before = sys.unraisablehook
sys.unraisablehook = resend_lost_interrupts(before)
thing = Thing()
ref = weakref.ref(thing, callback)
del thing  # lost here, as the command ends
sys.unraisablehook = before  # what console does as it returns
time.sleep(0.5)
print("ended with its own status")
"""


def test_an_interrupt_lost_as_the_command_ends_is_not_sent_after_it():
    """Rule: once the entry point has put the hook before back (the command has ended and
    said how), an interrupt lost just before is not sent again: it would come as the
    interpreter exits, a KeyboardInterrupt traceback after the command's own last line."""
    rc, out, err = _run(ENDED_MEANWHILE)
    assert (rc, out.strip()) == (0, "ended with its own status"), (rc, out, err)
    assert "Traceback" not in err, err


def test_other_exceptions_in_a_callback_are_still_reported_as_python_does():
    """Rule: the hook only takes interrupts; any other exception a callback raises is printed
    by the hook it replaced ("Exception ignored in ..." with its traceback)."""
    rc, out, err = _run(LOST_IN_CALLBACK % ("ValueError", 0))
    assert (rc, out.strip()) == (0, "slept through"), (rc, out, err)
    assert "Exception ignored in" in err and "ValueError" in err, err


# an agent's start-up (agent.ops.startstop) whose stop signal's StoppedStarting is raised
# inside a weakref callback: in an interruptible step (then asleep), or as its last act (then
# the next step)
STARTUP_LOST = r"""
import signal, sys, time, weakref
from agent.__main__ import resend_lost_interrupts
from agent.ops.startstop import StartupSignals, StoppedStarting

class Thing:
    pass

sys.unraisablehook = resend_lost_interrupts(sys.unraisablehook)
starting = StartupSignals().arm()
try:
    with starting.interruptible():
        thing = Thing()
        ref = weakref.ref(thing, lambda _r: starting._note(signal.SIGTERM, None))
        del thing  # StoppedStarting raised in the callback: dropped
        time.sleep(%d)
    starting.step("engines loaded")
    print("served")
except StoppedStarting as exc:
    print("stopped:", exc)
"""


def test_a_start_up_stop_lost_in_a_callback_still_stops_the_agent():
    """Rule: an agent's ``StoppedStarting`` (SIGTERM while it loads its engines) dropped in a
    callback is raised again: at once within the loading step, else at the next step; the
    line names the signal, and nothing is printed for the lost one (lost, the agent went on
    to serve after `systemctl stop`)."""
    for sleep_s in (WAIT_S, 0):
        rc, out, err = _run(STARTUP_LOST % sleep_s)
        assert rc == 0 and out.startswith("stopped: stopped by SIGTERM during start-up"), (
            sleep_s, rc, out, err)
        assert "Exception ignored" not in err and "Traceback" not in err, (sleep_s, err)


# a gc callback that raises one KeyboardInterrupt at the first collection once a module has
# begun to import: as if Ctrl-C came while a collection ran, at that point of the start
CONSOLE_WITH_LOST_INTERRUPT = r"""
import gc, sys
from agent.__main__ import console

fired = []

def collecting(phase, _info):
    if phase == "start" and %r in sys.modules and not fired:
        fired.append(1)
        raise KeyboardInterrupt()

gc.callbacks.append(collecting)
sys.argv = ["edge-agent"] + %r
status = console()
print("fired" if fired else "never fired")
sys.exit(status)
"""


@pytest.mark.parametrize("after", ["agent.commands.interrupts", "agent.testbed.local"])
def test_ctrl_c_lost_in_a_callback_during_testbed_start_still_ends_it_with_130(tmp_path, after):
    """Rule: a Ctrl-C swallowed by a callback while `edge-agent testbed` starts (its handlers
    importing, before the entry point holds signals back; the command's own modules
    importing) ends the command as any Ctrl-C does: exit 130, one line naming the interrupt,
    no traceback, and no agent left running (lost, the testbed would run its 30 s and exit
    0)."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    argv = ["testbed", "--topology", topo, "--policies", "cf", "--rates", "5",
            "--duration", "30", "--no-plots", "--out", out]
    rc, stdout, stderr = _run(CONSOLE_WITH_LOST_INTERRUPT % (after, argv))
    assert "fired" == stdout.strip().splitlines()[-1], (stdout, stderr)
    lines = [l for l in stderr.splitlines() if l.strip() and not l.startswith("[")]
    assert rc == 130, (rc, stderr[-3000:])
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and "interrupted (SIGINT)" in lines[0], stderr[-3000:]
    # the agents get their SIGTERM from the command (or from the kernel at its exit)
    deadline = time.monotonic() + WAIT_S
    while pids_with(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids_with(out) == [], pids_with(out)
