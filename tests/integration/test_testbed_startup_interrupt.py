"""Ctrl-C while `python -m agent testbed` starts (its modules still importing, its topology
and bundle loading, its agents starting): the command exits 130 with one line saying it was
interrupted, never a traceback and never silently, and leaves no agent process behind.
Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology
from tests.unit.processes import pids_with

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# after the signal: the seconds a start-up interrupt may take to end the command (agents
# already started drain first); generous for a loaded machine, and ended by the exit
EXIT_WAIT_S = 120


def _before_project_code(rc: int, stderr: str) -> bool:
    """The signal came while the interpreter itself was starting (before its SIGINT handler,
    setting up its standard streams, in its site module, or importing ``runpy``), or while its ``runpy`` still compiled
    ``agent/__main__.py`` (a traceback of the interpreter's own frames alone, none in this
    project), or while it imported the ``agent`` package before the entry point ran, inside
    importlib's module-lock callback, where Python reports the interrupt lost ("Exception
    ignored in" with a KeyboardInterrupt in its own frames) and goes on: no code of the
    project ran, so nothing of it is under test."""
    # a step of the interpreter's own initialisation cut short: "Fatal Python error:
    # init_import_site: Failed to import the site module" (3.8 spells the function
    # init_import_size), "Fatal Python error: init_sys_streams: can't initialize sys standard
    # streams" (a CI run's, at 0.1 s: "Python runtime state: core initialized")
    if (rc == -signal.SIGINT and not stderr) or "Fatal Python error: init_" in stderr:
        return True
    # the interpreter importing runpy itself, before it looks for ``agent`` (status 1)
    if "Could not import runpy module" in stderr:
        return True
    frames = [line for line in stderr.splitlines() if line.lstrip().startswith('File "')]
    if not frames or any(REPO in line for line in frames):
        return False
    if "Exception ignored in" in stderr and "KeyboardInterrupt" in stderr:
        return True
    return rc == -signal.SIGINT and stderr.rstrip().endswith("KeyboardInterrupt")


def _signal_state(pid: int) -> str:
    """Each thread's signal masks as /proc shows them (blocked, ignored, caught, pending): for
    the message of a run that went on after its SIGINT, to tell a signal never taken (blocked
    or ignored) from one taken whose interrupt was lost; empty once the process is gone."""
    lines = []
    try:
        tids = sorted(os.listdir("/proc/%d/task" % pid), key=int)
    except OSError:
        return ""
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                fields = [l.split() for l in f if l.startswith(("Name:", "Sig", "ShdPnd:"))]
        except OSError:  # the thread ended meanwhile
            continue
        lines.append("%s %s" % (tid, " ".join("%s%s" % (k[0], k[1]) for k in fields if
                                               len(k) == 2)))
    return "\n".join(lines)


def _interrupt_at(tmp_path, topo: str, delay_s: float, run: int = 0):
    """Run the testbed, SIGINT it ``delay_s`` seconds after its start; (status, stderr,
    out folder, its threads' signal state just before the signal and 50 ms after it)."""
    out = str(tmp_path / ("out-%d-%g" % (run, delay_s)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-m", "agent", "testbed", "--topology", topo,
                          "--policies", "cf", "--rates", "5", "--duration", "30",
                          "--no-plots", "--out", out], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    try:
        time.sleep(delay_s)
        before = _signal_state(p.pid)
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)
        after = _signal_state(p.pid)
        _, stderr = p.communicate(timeout=EXIT_WAIT_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, stderr, out, "before:\n%s\nafter:\n%s" % (before, after)


def test_ctrl_c_at_any_moment_of_start_up_exits_130_with_one_line(tmp_path):
    """Rule: SIGINT 0.1 to 2 s after `python -m agent testbed` starts (importing, loading,
    starting agents) exits 130 with exactly one line besides the progress bar, naming the
    interrupt, no traceback, and no agent of the run still running afterwards."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    seen = []
    delays, later, run = [0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0], 0, 0
    while delays:
        delay_s, run = delays.pop(0), run + 1
        rc, stderr, out, state = _interrupt_at(tmp_path, topo, delay_s, run)
        if _before_project_code(rc, stderr):
            # a loaded machine starts the interpreter later: try later in the start-up instead
            if later < 5:
                delays.append(round(delay_s + 0.4, 2))
                later += 1
            continue
        lines = [l for l in stderr.splitlines() if l.strip() and not l.startswith("[")]
        assert rc == 130, (delay_s, rc, stderr[-3000:], state)
        assert "Traceback" not in stderr, (delay_s, stderr[-3000:])
        assert len(lines) == 1 and "interrupted" in lines[0], (delay_s, stderr[-3000:])
        # the agents get their SIGTERM from the command (or from the kernel at its exit)
        deadline = time.monotonic() + EXIT_WAIT_S
        while pids_with(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pids_with(out) == [], (delay_s, pids_with(out))
        seen.append(lines[0])
    # the delays reached the project's code, importing and beyond
    assert len(seen) >= 5, seen


def test_only_an_interrupt_in_the_interpreters_own_frames_counts_as_before_project_code():
    """Rule of the test above: a start-up traceback counts as no code of the project's having
    run only when none of its frames is in this project (runpy compiling ``agent/__main__.py``,
    as one loaded run met it at 0.15 s, or Python's own report of an interrupt lost in
    importlib's callback before the entry point ran); one with a frame of the project, or a
    run that went on with no report at all, is a failure."""
    frozen = ('Traceback (most recent call last):\n'
              '  File "<frozen runpy>", line 189, in _run_module_as_main\n'
              '  File "<frozen runpy>", line 159, in _get_module_details\n'
              '  File "<frozen importlib._bootstrap_external>", line 1070, in source_to_code\n'
              '  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed\n'
              'KeyboardInterrupt\n')
    assert _before_project_code(-signal.SIGINT, frozen)
    ours = frozen.replace('  File "<frozen importlib._bootstrap>"',
                          '  File "%s/agent/__main__.py", line 30, in console\n'
                          '  File "<frozen importlib._bootstrap>"' % REPO)
    assert not _before_project_code(-signal.SIGINT, ours)
    assert not _before_project_code(130, frozen)
    # lost in importlib's callback while the interpreter imported the package, reported by
    # Python's own hook; the run went on (status 0)
    lost = ('Exception ignored in: <function _get_module_lock.<locals>.cb at 0x7f88f94263e0>\n'
            'Traceback (most recent call last):\n'
            '  File "<frozen importlib._bootstrap>", line 199, in cb\n'
            'KeyboardInterrupt: \n'
            '[....]   0%     0s cf @ 5/s: starting workers\n')
    assert _before_project_code(0, lost)
    assert not _before_project_code(0, lost.replace(
        '  File "<frozen importlib._bootstrap>"',
        '  File "%s/agent/__main__.py", line 50, in hook\n'
        '  File "<frozen importlib._bootstrap>"' % REPO))
    assert not _before_project_code(0, "[....]   0%     0s cf @ 5/s: starting workers\n")
    # Python importing runpy for -m, before any module of the project is looked for
    runpy = ('Could not import runpy module\n'
             'Traceback (most recent call last):\n'
             '  File "<frozen importlib._bootstrap>", line 1173, in _find_and_load\n'
             '  File "<frozen importlib._bootstrap>", line 165, in __init__\n'
             'KeyboardInterrupt\n')
    assert _before_project_code(1, runpy)
    # the interpreter's initialisation, its standard streams not yet set up (a CI run's)
    streams = ("Fatal Python error: init_sys_streams: can't initialize sys standard streams\n"
               "Python runtime state: core initialized\n"
               "KeyboardInterrupt\n")
    assert _before_project_code(1, streams)
    assert not _before_project_code(1, "Fatal Python error: Aborted\n")
