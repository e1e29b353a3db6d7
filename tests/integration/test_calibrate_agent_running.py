"""``edge-agent calibrate`` refuses to measure while an agent of its state directory runs (a
device's agents keep their state in STATE_DIR/NODE): the agent's work would compete with the
timings for the CPU and GPU. The refusal is one line naming the agent, its pid and how to stop
it, before anything is measured or written; ``--force`` measures anyway with a warning. An
agent whose state is elsewhere (another rehearsal, a testbed run) is not the device's.

The agent here is a real process with an agent's command line (``edge-agent run --config
NODE.toml``, the console script's form, its config given relative to its working folder) that
only sleeps: what is checked is how calibrate finds it, not what the agent does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.ops.running import running_agents
from tests.integration.calibration_fixtures import REPO, calibration_bundle


def _cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "agent", "calibrate"] + list(args), cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)


@pytest.fixture
def agent(tmp_path):
    """A process whose command line is ``.../edge-agent run --config etc/w1.toml`` (relative to
    its working folder ``tmp_path``), w1's state in ``tmp_path/state/w1``; yields its pid."""
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "edge-agent"
    script.write_text("import sys, time\nprint('up', flush=True)\ntime.sleep(300)\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "w1.toml").write_text('node_id = "w1"\nstate_dir = "../state/w1"\n')
    proc = subprocess.Popen([sys.executable, str(script), "run", "--config", "etc/w1.toml"],
                            cwd=str(tmp_path), stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"up\n"  # its command line is in /proc from here
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_an_agent_of_the_state_directory_is_found_and_one_elsewhere_is_not(tmp_path, agent):
    """Rule: the agent counts for STATE_DIR (its state in STATE_DIR/w1) and for its own state
    folder, not for a sibling state directory; its config path is resolved from its working
    folder."""
    found = running_agents(str(tmp_path / "state"))
    assert found == [(agent, str(tmp_path / "etc" / "w1.toml"), "")]
    assert running_agents(str(tmp_path / "state" / "w1")) == found
    assert running_agents(str(tmp_path / "stat")) == []
    assert running_agents(str(tmp_path / "other")) == []


def test_calibrate_refuses_while_the_agent_runs_and_force_measures_anyway(tmp_path, agent):
    """Rule: without --force, exit 2 with one line naming w1, its pid, the kill that stops it
    and --force, and no profile written; with --force the profile is written and stderr
    warns that the agent ran."""
    bundle = calibration_bundle(str(tmp_path))
    state = str(tmp_path / "state")
    args = ["--bundle", bundle, "--stages", "1", "--seconds", "0.2", "--warmup", "0.1",
            "--state-dir", state]
    proc = _cli(*args)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "agent w1 (pid %d, %s) is running with its state in %s" % (
        agent, tmp_path / "etc" / "w1.toml", state) in err[0]
    assert "stop it first (kill %d)" % agent in err[0] and "--force" in err[0]
    assert not os.path.exists(os.path.join(state, "calibration.json"))
    proc = _cli(*(args + ["--force"]))
    assert proc.returncode == 0, proc.stderr
    assert "warning: measuring anyway (--force): agent w1 (pid %d" % agent in proc.stderr
    assert os.path.exists(os.path.join(state, "calibration.json"))
