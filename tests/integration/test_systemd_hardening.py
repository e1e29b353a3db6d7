"""The units' service contract for faults and hardening: the agent's exit status 78 is never
restarted, a calibration stopped by a signal is no failure (and nothing restarts it), both
units score <= 4.5 in `systemd-analyze security`, the calibration keeps the agents' plan cache
and state directory ($CACHE_DIRECTORY/$STATE_DIRECTORY), and log lines carry journald priorities
when stderr is the journal."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import subprocess

import pytest

from agent.cli import JournalFormatter, error_line, setup_logging, stderr_is_journal
from agent.commands.install import unit_dir
from agent.errors import EXIT_CONFIG
from agent.ops.watchdog import watchdog_interval_s
from engines.trt_backend import default_cache_dir

MAX_EXPOSURE = 4.5
SERVICES = ("edge-agent@.service", "edge-agent-calibrate.service")


def _unit(name):
    with open(os.path.join(unit_dir(), name)) as f:
        return f.read().splitlines()


def test_configuration_faults_are_not_restarted():
    """The agent unit restarts on failure, except after EX_CONFIG (78), the status of a
    config/GPU fault, which a restart cannot fix."""
    unit = _unit("edge-agent@.service")
    assert "Restart=on-failure" in unit
    assert "RestartPreventExitStatus=%d" % EXIT_CONFIG in unit


def test_a_calibration_stopped_by_a_signal_is_no_failure_and_nothing_restarts_it():
    """calibrate exits 128 + the signal after SIGTERM (systemctl stop, a shutdown) or SIGINT,
    having restored the power mode: the calibration unit counts both statuses as success. It
    has no Restart= (so no RestartPreventExitStatus either: there is nothing to prevent).
    tests/integration/test_calibrate_interrupt.py checks the statuses calibrate exits with."""
    unit = _unit("edge-agent-calibrate.service")
    (line,) = [ln for ln in unit if ln.startswith("SuccessExitStatus=")]
    assert set(line.split("=", 1)[1].split()) == {str(128 + signal.SIGTERM),
                                                   str(128 + signal.SIGINT)}
    assert not [ln for ln in unit if ln.startswith(("Restart=", "RestartPreventExitStatus="))]


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_analyze_security_exposure_is_at_most_4_5(name, tmp_path):
    """`systemd-analyze security --offline=true` scores each service <= 4.5."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    # an instance name for the template (the offline check reads the file as given)
    path = tmp_path / name.replace("@.", "@w1.")
    shutil.copy(os.path.join(unit_dir(), name), str(path))
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=120)
    if "--offline" in proc.stdout and "unrecognized" in proc.stdout:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-2000:]
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout[-3000:]


def test_calibration_uses_the_agents_state_and_cache_directories():
    """The calibrate unit passes no --state-dir/--cache-dir of its own: $STATE_DIRECTORY, and
    $CACHE_DIRECTORY/trt where the agents' engine_cache_dir is "" (a rendered calibrate.env
    adds the rendered engine_cache_dir as --cache-dir)."""
    start = [ln for ln in _unit("edge-agent-calibrate.service") if ln.startswith("ExecStart=")]
    assert start and "--state-dir" not in start[0] and "--cache-dir" not in start[0]
    env = {"CACHE_DIRECTORY": "/var/cache/edge-agent:/other"}
    assert default_cache_dir(env) == "/var/cache/edge-agent/trt"
    assert default_cache_dir({}).endswith(os.path.join(".cache", "edge-agent", "trt"))


def test_journal_lines_carry_syslog_priorities(tmp_path):
    """With JOURNAL_STREAM naming stderr, every line starts with <N> (err = 3, warning = 4);
    without it, the plain time-stamped format."""
    f = open(str(tmp_path / "err"), "w")
    st = os.fstat(f.fileno())
    env = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}
    assert stderr_is_journal(env, f) and not stderr_is_journal({}, f)
    assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"}, f)
    fmt = JournalFormatter()
    rec = logging.LogRecord("agent.run", logging.ERROR, __file__, 1, "bad\nsecond", None, None)
    assert fmt.format(rec) == "<3>agent.run: bad\n<3>second"
    rec = logging.LogRecord("engines", logging.WARNING, __file__, 1, "fallback", None, None)
    assert fmt.format(rec) == "<4>engines: fallback"
    assert error_line("run", "x", True) == "<3>edge-agent run: error: x"
    f.close()


def test_logging_setup_keeps_a_test_harness_handler():
    """setup_logging does not replace handlers it did not install (pytest's capture)."""
    root = logging.getLogger()
    if not root.handlers:
        pytest.skip("no handler installed by the harness")
    before = list(root.handlers)
    setup_logging("INFO", io.StringIO(), {})
    assert root.handlers == before


def test_watchdog_interval_follows_watchdog_usec():
    """Pings at half of WatchdogSec (capped at the default), only for this process."""
    assert watchdog_interval_s({}) == 1.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 1.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000000"}) == 0.5
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) == 1.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) == 1.0


@pytest.mark.parametrize("argv", [["run", "--config", "{tmp}/missing.toml"],
                                  ["calibrate", "--bundle", "{tmp}/no-bundle", "--profile",
                                   "{tmp}/p.json", "--modes", "current"]])
def test_the_line_saying_why_a_service_did_not_start_has_journald_error_priority(tmp_path, argv):
    """Rule: under systemd (stderr is the journal stream), the one line a service command prints
    when it cannot start carries ``<3>``, so ``journalctl -p err`` shows it; elsewhere it is
    plain."""
    import sys

    argv = [a.format(tmp=tmp_path) for a in argv]
    for journal in (True, False):
        with open(str(tmp_path / "err"), "w+") as f:
            st = os.fstat(f.fileno())
            env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino) if journal
                       else "")
            rc = subprocess.run([sys.executable, "-m", "agent"] + argv, stderr=f, env=env,
                                cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                    os.path.abspath(__file__)))), timeout=120).returncode
            f.seek(0)
            lines = [l for l in f.read().splitlines() if "error:" in l]
        assert rc in (2, EXIT_CONFIG) and len(lines) == 1, lines
        assert lines[0].startswith(("<3>" if journal else "") + "edge-agent " + argv[0] + ": error:")
