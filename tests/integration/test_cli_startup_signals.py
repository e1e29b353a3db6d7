"""SIGTERM and SIGHUP while a command's modules still load, before the command sets its own
handlers: the command ends as it does later in its run, with one line naming the signal and
exit 143 (SIGHUP: 129), never silently by the signal and never with a traceback, whether it was
started as `python -m agent` or as the `edge-agent` console script setup.cfg declares. Only
that entry point sets the handlers: importing the package leaves a program's own alone.
Real processes, real signals."""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the first project module imported once the entry point's handlers are set (agent.cli's), and
# the last module the parser's command modules import with an import statement (install's):
# in the import-time lines Python writes, the first shows the signal came after the handlers
# were set, and the second missing shows it came while the command line's modules loaded,
# before the command's own handlers. Python writes no line for a module imported through
# importlib.import_module, as agent.cli imports the command modules themselves (so not
# agent.commands.doctor, the last); a run that reached its command's end checks the mark
LAST_COMMAND = " agent.commands.install_files\n"
AFTER_HANDLERS = " agent.errors\n"
WINDOW_HITS = 3  # runs whose signal landed in the window, per case
MAX_RUNS = 30  # runs per case to find the window and land in it WINDOW_HITS times (11-17
# of them on a 2-core VM beside 4 busy processes, for `run`, whose window is the narrowest)


def _console_script(tmp_path) -> str:
    """What pip writes for setup.cfg's `edge-agent` console script entry point."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    entries = dict(line.split("=", 1) for line in
                   cfg["options.entry_points"]["console_scripts"].strip().splitlines())
    module, func = (s.strip() for s in entries["edge-agent "].split(":"))
    path = tmp_path / "edge-agent"
    path.write_text("#!%s\nimport sys\nfrom %s import %s\nif __name__ == '__main__':\n"
                    "    sys.exit(%s())\n" % (sys.executable, module, func, func))
    path.chmod(0o755)
    return str(path)


def _signal_at(launcher, signum: int, delay_s: float, tmp_path, argv=None):
    """Start `testbed` (its topology missing: once started it ends at once), or ``argv``, send
    ``signum`` ``delay_s`` seconds later; (status, stderr with Python's import-time lines, the
    part of it written before the signal was sent: for a command that goes on after it)."""
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONPROFILEIMPORTTIME="1")
    argv = argv or ["testbed", "--topology", str(tmp_path / "none.json"),
                    "--out", str(tmp_path / "out")]
    p = subprocess.Popen(launcher + argv,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(delay_s)
        # what is in the pipe now (Python writes its import-time lines unbuffered; all of
        # them fit the pipe's buffer), read just before the signal
        os.set_blocking(p.stderr.fileno(), False)
        before = p.stderr.read() or b""  # all there is, up to the pipe's end (None: nothing)
        p.send_signal(signum)
        os.set_blocking(p.stderr.fileno(), True)
        _, rest = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, (before + rest).decode(errors="replace"), before.decode(
        errors="replace")


def _too_early(delay_s: float, late):
    """(early, late) after a run whose signal came before the project's code: a later bound
    at or below it was timing noise and is dropped."""
    return delay_s, (late if late is not None and late > delay_s else None)


def _too_late(delay_s: float, early: float):
    """(early, late) after a run whose signal came past the window (the command's own
    handlers set): an earlier bound at or above it was timing noise and is dropped."""
    return (early if early < delay_s else 0.0), delay_s


def _next_delay(delay_s: float, early: float, late) -> float:
    """The next delay to try: between the latest too early and the earliest too late once
    both are known, else 1.4x later or 0.6x earlier, so that a machine however slow or fast
    (an interpreter compiling numpy without byte-code took seconds) reaches the window."""
    if late is None:
        return round(max(delay_s, early) * 1.4, 3)
    if early <= 0.0:
        return round(late * 0.6, 3)
    return round((early + late) / 2, 3)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("how", ["python -m agent", "console script"])
def test_sigterm_or_sighup_while_the_modules_load_ends_with_one_line_and_its_status(
        tmp_path, how, signum):
    """Rule: SIGTERM (SIGHUP) while the command line's modules import, before the command's
    own handlers, exits 143 (129) with exactly one line `interrupted (SIGTERM)`, no traceback,
    as `python -m agent` and as the console script; a signal before the entry point ran (the
    interpreter starting) is no part of the rule, and its run is tried later."""
    if signal.getsignal(signum) is signal.SIG_IGN:  # nohup: the command keeps it ignored
        pytest.skip("%s is ignored here, and so in the command" % signal.Signals(signum).name)
    launcher = ([sys.executable, "-m", "agent"] if how == "python -m agent"
                else [_console_script(tmp_path)])
    name = signal.Signals(signum).name
    hits, early, late, delay_s = 0, 0.0, None, 0.08
    for _ in range(MAX_RUNS):
        if hits >= WINDOW_HITS:
            break
        sent_s = delay_s
        rc, stderr, _ = _signal_at(launcher, signum, sent_s, tmp_path)
        if AFTER_HANDLERS not in stderr:  # the interpreter, not yet the project's code
            early, late = _too_early(sent_s, late)
            delay_s = _next_delay(sent_s, early, late)
            continue
        past = LAST_COMMAND in stderr  # the command's own handlers were set: past the window
        if past:
            early, late = _too_late(sent_s, early)
        delay_s = _next_delay(sent_s, early, late)
        lines = [ln for ln in stderr.splitlines()
                 if ln.strip() and not ln.startswith(("import time:", "["))]
        if "no such topology" in stderr:
            # the command had run to its end and said how before the signal came (past the
            # window): it exits 2, or 128 + the signal where the signal beat main's return,
            # or dies of it where it came after console put the default handlers back (an
            # exit that hangs stays killable)
            assert past, "%r no longer marks the parser built" % LAST_COMMAND
            assert rc in (2, 128 + signum, -signum), (sent_s, rc, stderr[-2000:])
            continue
        # a str, which pytest shows whole (a tuple's repr is cut short, and a traceback with it)
        seen = "signal after %s s: status %s, stderr:\n%s" % (sent_s, rc, "\n".join(lines))
        assert rc == 128 + signum, seen
        assert "Traceback" not in stderr, seen
        assert len(lines) == 1 and lines[0].endswith("interrupted (%s)" % name), seen
        hits += not past
    assert hits >= WINDOW_HITS, "only %d runs signalled while the modules loaded" % hits


def test_sighup_while_runs_modules_load_does_not_end_the_agent(tmp_path):
    """Rule: SIGHUP never ends `run` (an agent has read no config or keys yet while its modules
    load: nothing to reload), so one in that window is ignored and start-up goes on: here to
    its missing config's line and exit 78, never `interrupted (SIGHUP)` or 129."""
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        pytest.skip("SIGHUP is ignored here, and so in the command")
    config = str(tmp_path / "missing.toml")
    hits, early, late, delay_s = 0, 0.0, None, 0.08
    for _ in range(MAX_RUNS):
        if hits >= WINDOW_HITS:
            break
        sent_s = delay_s
        rc, stderr, before = _signal_at([sys.executable, "-m", "agent"], signal.SIGHUP,
                                        sent_s, tmp_path, ["run", "--config", config])
        if config in stderr:  # `run` got as far as its config: past the parser
            assert LAST_COMMAND in stderr, "%r no longer marks the parser built" % LAST_COMMAND
        if rc == -signal.SIGHUP and config in stderr:
            # `run` had said its config was missing and ended, and console had put the default
            # handler back (an exit that hangs stays killable): past the window
            early, late = _too_late(sent_s, early)
            delay_s = _next_delay(sent_s, early, late)
            continue
        # `run` goes on after the SIGHUP: where it landed is read from what was written before
        if AFTER_HANDLERS not in before:  # the interpreter, not yet the project's code
            if rc == -signal.SIGHUP:  # before the entry point's handler: Python's default
                assert AFTER_HANDLERS not in stderr, (sent_s, rc, stderr[-2000:])
            else:  # ignored from the entry point's handler on
                assert rc == 78 and config in stderr, (sent_s, rc, stderr[-2000:])
            early, late = _too_early(sent_s, late)
            delay_s = _next_delay(sent_s, early, late)
            continue
        past = LAST_COMMAND in before
        if past:
            early, late = _too_late(sent_s, early)
        delay_s = _next_delay(sent_s, early, late)
        assert rc == 78 and config in stderr, (sent_s, rc, stderr[-2000:])
        assert "interrupted" not in stderr and "Traceback" not in stderr, stderr[-2000:]
        hits += not past
    assert hits >= WINDOW_HITS, "only %d runs signalled while the modules loaded" % hits


def test_importing_the_package_leaves_the_programs_signal_handlers_alone():
    """Rule: importing agent, agent.cli and agent.__main__ from other Python code sets no
    signal handler; only the console entry point does, while it runs a command."""
    code = ("import signal\nbefore = [signal.getsignal(s) for s in "
            "(signal.SIGTERM, signal.SIGHUP, signal.SIGINT)]\n"
            "import agent, agent.cli, agent.__main__, agent.commands.interrupts\n"
            "after = [signal.getsignal(s) for s in "
            "(signal.SIGTERM, signal.SIGHUP, signal.SIGINT)]\n"
            "print(before == after)\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=REPO),
                         stdout=subprocess.PIPE, universal_newlines=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"


# A module whose import makes a class with a descriptor, as every dataclass field given with
# field() is: the signal arrives while the interpreter calls the descriptor's __set_name__
_SET_NAME_SIGNAL = """
import os, signal, sys
import agent.cli

class Descriptor:
    def __set_name__(self, owner, name):
        os.kill(os.getpid(), signal.%s)
        for _ in range(1000):  # the handler runs here, at the next bytecode
            pass

def main():
    class Made:
        field = Descriptor()
    return 0

agent.cli.main = main  # what console imports and runs: the command line's modules loading
from agent.__main__ import console
sys.argv = ["edge-agent", "testbed"]
sys.exit(console())
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_while_a_class_is_made_ends_with_one_line_not_a_runtime_error(signum):
    """Rule: a signal that lands while a module's class is made, inside a descriptor's
    __set_name__ (Python up to 3.11 turns what is raised there into a RuntimeError), ends the
    command as any other interrupt: one line `interrupted (SIGHUP)` and the signal's status,
    no traceback."""
    if signal.getsignal(signum) is signal.SIG_IGN:
        pytest.skip("%s is ignored here, and so in the command" % signal.Signals(signum).name)
    name = signal.Signals(signum).name
    out = subprocess.run([sys.executable, "-c", _SET_NAME_SIGNAL % name],
                         env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    seen = "status %s, stderr:\n%s" % (out.returncode, out.stderr)
    assert out.returncode == 128 + signum, seen
    assert lines == ["edge-agent: interrupted (%s)" % name], seen


# numpy's import held until the test has signalled, turning an interrupt raised inside it into
# the ImportError numpy's C API raises for one ("failed to import", after printing it): a CI run
# met that traceback when Ctrl-C landed while numpy imported
_NUMPY_SIGNAL = """
import os, sys, time
MARK, GO = sys.argv[1], sys.argv[2]

class HeldNumpy:
    def find_spec(self, name, path, target=None):
        if name != "numpy":
            return None
        open(MARK, "w").close()
        try:
            while not os.path.exists(GO):
                time.sleep(0.01)
        except BaseException:
            raise ImportError("numpy.core.multiarray failed to import")
        return None  # the real numpy is found as ever

sys.meta_path.insert(0, HeldNumpy())
sys.argv = ["edge-agent", "--version"]
from agent.__main__ import console
sys.exit(console())
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_while_numpy_imports_ends_with_one_line_after_it(signum, tmp_path):
    """Rule: a signal that lands while numpy imports waits until the import is done, then ends
    the command as any other interrupt: one line `interrupted (SIGINT)` and the signal's
    status, never the error a library makes of an interrupt inside its own import."""
    if signal.getsignal(signum) is signal.SIG_IGN:
        pytest.skip("%s is ignored here, and so in the command" % signal.Signals(signum).name)
    name = signal.Signals(signum).name
    mark, go = str(tmp_path / "importing"), str(tmp_path / "go")
    p = subprocess.Popen([sys.executable, "-c", _NUMPY_SIGNAL, mark, go],
                         env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, universal_newlines=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(mark) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        p.send_signal(signum)
        open(go, "w").close()
        _, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    seen = "status %s, stderr:\n%s" % (p.returncode, stderr)
    assert p.returncode == 128 + signum, seen
    assert lines == ["edge-agent: interrupted (%s)" % name], seen
