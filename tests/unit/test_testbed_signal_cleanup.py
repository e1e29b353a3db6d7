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


@pytest.fixture(autouse=True)
def _ctrl_c_handled():
    """These tests send SIGINT to their own process: Python's own handler for it while they
    run, whatever the process inherited (a background job of a shell script starts with
    SIGINT ignored, and the agents' Ctrl-C would never arrive)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _two_agents(tmp_path, code: str):
    """A ``LocalAgents`` running agents "a" and "b", each ``python -c code``; and the two."""
    agents = LocalAgents(str(tmp_path / "run"), fresh=False)
    for name in ("a", "b"):
        agents.procs[name] = AgentProcess(name, str(tmp_path / (name + ".toml")),
                                          str(tmp_path / (name + ".log")),
                                          str(tmp_path / "notify.sock"), python=sys.executable,
                                          launcher=("-c", code))
    return agents, list(agents.procs.values())


def _started(folder, pid):
    return os.path.exists(os.path.join(folder, str(pid)))


def test_ctrl_c_again_while_agents_drain_kills_every_agent_and_still_interrupts(tmp_path,
                                                                                monkeypatch):
    """Rule: an interrupt that arrives while ``LocalAgents.stop`` waits for the drains still
    interrupts (KeyboardInterrupt), but only after every agent it was stopping is SIGKILLed
    and reaped: none is left running behind the testbed."""
    monkeypatch.setenv("READY_DIR", str(tmp_path))
    agents, procs = _two_agents(tmp_path, IMPATIENT)
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


def _spin():
    """Bytecodes to run, at which Python runs the handler of a signal that has arrived."""
    return sum(i for i in range(2000))


def test_with_first_acts_the_first_signal_raises_and_those_after_it_wait():
    """Rule: ``DeferredSignals(first_acts=True)`` hands the first SIGINT inside the block to
    its handler before (KeyboardInterrupt, in the block), and notes the ones after it from
    that instant: a clean-up in the block's ``except`` runs to its end though one comes at its
    first statement, and the interrupt raised is the first one, once."""
    cleaned = []
    with pytest.raises(KeyboardInterrupt):
        with DeferredSignals(first_acts=True) as held:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                _spin()
                cleaned.append("not interrupted")
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGINT)  # pressed again at once
                _spin()
                cleaned.append("cleaned up")
                raise
    assert cleaned == ["cleaned up"]
    assert held.acted == [signal.SIGINT] and held.noted == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_with_first_acts_inside_a_deferral_the_first_signal_is_the_outer_blocks():
    """Rule: a ``first_acts`` block inside a ``DeferredSignals`` block hands its first signal
    to the outer block's note (no interrupt inside); the outer block raises it at its end."""
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with DeferredSignals() as outer:
            with DeferredSignals(first_acts=True) as inner:
                os.kill(os.getpid(), signal.SIGINT)
                _spin()
                steps.append("inner ran on")
            steps.append("outer ran on")
    assert steps == ["inner ran on", "outer ran on"]
    assert inner.acted == [signal.SIGINT] and outer.noted == [signal.SIGINT]


def test_an_agent_stop_interrupted_kills_each_agent_whatever_signals_follow(tmp_path,
                                                                              monkeypatch):
    """Rule: ``LocalAgents.stop`` interrupted while it waits (here by the first agent's own
    Ctrl-C at the testbed) SIGKILLs and reaps every agent it was stopping though a second
    Ctrl-C comes while the first is killed, and raises one KeyboardInterrupt."""
    agents, procs = _two_agents(tmp_path, "import time\nwhile True:\n    time.sleep(1)\n")
    kill = AgentProcess.kill

    def interrupted_wait(timeout_s):
        os.kill(os.getpid(), signal.SIGINT)
        _spin()

    def pressed_again(self, timeout_s=10.0):
        killed.append(procs.index(self))
        if self is procs[0]:
            os.kill(os.getpid(), signal.SIGINT)
            _spin()
        return kill(self, timeout_s)

    killed = []

    monkeypatch.setattr(procs[0], "stop", interrupted_wait)
    monkeypatch.setattr(AgentProcess, "kill", pressed_again)
    try:
        with pytest.raises(KeyboardInterrupt):
            agents.stop(["a", "b"], timeout_s=600.0)
        assert killed == [0, 1]  # b's SIGTERM may have ended it first: killed all the same
        assert all(p.poll() in (-signal.SIGKILL, -signal.SIGTERM) for p in procs)
        assert agents.procs == {}
    finally:
        for p in procs:
            if p.poll() is None:
                p.proc.kill()
                p.proc.wait()
