"""The testbed's clean-up is not cut short by the terminal's signals: a second Ctrl-C while its
agents drain SIGKILLs them (none outlives the testbed), and a block under ``DeferredSignals``
runs to its end, the signal acted on after it."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from agent.testbed.procs import AgentProcess, LocalAgents
from agent.testbed.sigdefer import DeferredSignals

# an "agent" that takes SIGTERM as a drain that never ends, and presses Ctrl-C at its parent
# (the impatient user's second Ctrl-C arrives while the testbed waits for the drain)
IMPATIENT = ("import os, signal, time\n"
             "def term(*_):\n"
             "    os.kill(os.getppid(), signal.SIGINT)\n"
             "signal.signal(signal.SIGTERM, term)\n"
             "open(os.path.join(os.environ['READY_DIR'], str(os.getpid())), 'w').close()\n"
             "while True:\n"
             "    time.sleep(1)\n")


def _started(folder, pid):
    return os.path.exists(os.path.join(folder, str(pid)))


def test_ctrl_c_again_while_agents_drain_kills_every_agent_and_still_interrupts(tmp_path,
                                                                                monkeypatch):
    """Rule: an interrupt that arrives while ``LocalAgents.stop`` waits for the drains still
    interrupts (KeyboardInterrupt), but only after every agent it was stopping is SIGKILLed
    and reaped: none is left running behind the testbed."""
    monkeypatch.setenv("READY_DIR", str(tmp_path))
    agents = LocalAgents(str(tmp_path / "run"), fresh=False)
    for name in ("a", "b"):
        agents.procs[name] = AgentProcess(name, str(tmp_path / (name + ".toml")),
                                          str(tmp_path / (name + ".log")),
                                          str(tmp_path / "notify.sock"), python=sys.executable,
                                          launcher=("-c", IMPATIENT))
    procs = list(agents.procs.values())
    # both have their SIGTERM handler in place before they are stopped
    while not all(_started(str(tmp_path), p.pid) for p in procs):
        assert all(p.poll() is None for p in procs), [p.log_lines(20) for p in procs]
        time.sleep(0.05)
    try:
        with pytest.raises(KeyboardInterrupt):
            agents.stop(["a", "b"], timeout_s=600.0)
        assert [p.poll() for p in procs] == [-signal.SIGKILL, -signal.SIGKILL]
        assert agents.procs == {}
    finally:
        for p in procs:
            if p.poll() is None:  # a failing run leaves none behind either
                p.kill()


def test_a_kill_reaps_the_agent_even_where_an_interrupted_wait_left_popens_lock_held(tmp_path):
    """Rule: ``AgentProcess.kill`` reaps the agent and returns its status (-SIGKILL) even when
    an earlier ``Popen.wait`` that a Ctrl-C cut short left Popen's own wait lock held (CPython
    takes it outside its ``try``; held here by hand, as that interrupt leaves it): Popen's wait
    alone would time out with the process dead."""
    p = AgentProcess("a", str(tmp_path / "a.toml"), str(tmp_path / "a.log"),
                     str(tmp_path / "notify.sock"), python=sys.executable,
                     launcher=("-c", "import time\nwhile True:\n    time.sleep(1)\n"))
    lock = getattr(p.proc, "_waitpid_lock", None)
    if lock is None:
        p.kill()
        pytest.skip("this Python's Popen has no wait lock to be left held")
    assert lock.acquire(False)
    try:
        assert p.kill(timeout_s=0.5) == -signal.SIGKILL
    finally:
        lock.release()
        if p.poll() is None:
            p.proc.kill()


def test_signals_inside_the_block_wait_until_it_ends(tmp_path):
    """Rule: SIGINT inside ``DeferredSignals`` does not interrupt the block; it is raised as
    KeyboardInterrupt once the block has ended, and the previous handler is back."""
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with DeferredSignals() as held:
            os.kill(os.getpid(), signal.SIGINT)
            signal.raise_signal(signal.SIGHUP)  # would end the process by default
            steps.append("after the signals")
    assert steps == ["after the signals"]
    assert held.noted == [signal.SIGINT, signal.SIGHUP]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_during_clean_up_of_an_interrupt_does_not_replace_it():
    """Rule: a signal noted during a clean-up that an exception is already propagating through
    (a ``finally``) is dropped: the exception that started the clean-up is the one raised."""

    class Started(Exception):
        pass

    with pytest.raises(Started):
        try:
            raise Started()
        finally:
            with DeferredSignals():
                os.kill(os.getpid(), signal.SIGINT)


def test_off_the_main_thread_the_block_runs_and_sets_no_handler():
    """Rule: ``DeferredSignals`` on another thread (where Python forbids setting handlers)
    runs its block and leaves the main thread's handlers alone."""
    ran = []

    def body():
        with DeferredSignals():
            ran.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert ran == [signal.default_int_handler]
