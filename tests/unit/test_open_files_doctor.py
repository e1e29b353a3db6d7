"""The open-file limit an agent gets, as the shipped unit sets it and as ``doctor`` reports it
(``agent.ops.doctor_check.check_open_files``): below 4096 a busy source runs out of
descriptors, and libzmq then refuses tcp:// clients or aborts on an ipc:// one. A process's
limits are its own: the lowered ones are set in child processes."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys

import pytest

from agent.commands.install import unit_dir
from agent.ops.doctor import Context
from agent.ops.doctor_check import OK, UNIT_LIMIT_FIX, WARN, check_open_files, unit_limits

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fake_systemctl(folder, out, code=0):
    """An executable ``systemctl`` in ``folder`` that records its arguments and prints
    ``out``, exiting ``code``."""
    os.makedirs(str(folder), exist_ok=True)
    path = os.path.join(str(folder), "systemctl")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho \"$@\" > %s/args\nprintf '%s'\nexit %d\n" % (folder, out, code))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def _fake_root(tmp_path, instances):
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "etc" / "systemd" / "system" / "edge-agent@.service").write_text("[Service]\n")
    (root / "etc" / "edge-agent").mkdir(parents=True)
    for name in instances:
        (root / "etc" / "edge-agent" / (name + ".toml")).write_text("")
    return root


def test_the_shipped_unit_sets_an_open_file_limit_of_65536():
    """Rule: edge-agent@.service sets LimitNOFILE=65536, so the agent never starts under
    systemd's default soft limit of 1024."""
    with open(os.path.join(unit_dir(), "edge-agent@.service")) as f:
        lines = [ln.strip() for ln in f if not ln.lstrip().startswith("#")]
    assert "LimitNOFILE=65536" in lines


def test_unit_limits_reads_one_systemctl_show_and_nothing_when_it_fails(tmp_path):
    """Rule: one `systemctl show -p LimitNOFILE UNIT...` gives each unit's value in order; a
    systemctl that fails (no service manager running) gives none."""
    units = ["edge-agent@w1.service", "edge-agent@w2.service"]
    ok = _fake_systemctl(tmp_path / "ok", "LimitNOFILE=1024\\n\\nLimitNOFILE=infinity\\n")
    assert unit_limits(units, ok) == {units[0]: "1024", units[1]: "infinity"}
    with open(str(tmp_path / "ok" / "args")) as f:
        assert f.read().split() == ["show", "-p", "LimitNOFILE"] + units
    down = _fake_systemctl(tmp_path / "down", "", code=1)
    assert unit_limits(units, down) == {}


def test_doctor_warns_of_an_installed_unit_below_4096(tmp_path, monkeypatch):
    """Rule: where the agent's unit is installed and systemctl answers, each instance (a
    config in /etc/edge-agent) is shown with its LimitNOFILE, and one below 4096 is a WARN
    naming it, whose fix is LimitNOFILE=65536 in the unit."""
    root = _fake_root(tmp_path, ["w1", "w2"])
    _fake_systemctl(tmp_path / "bin", "LimitNOFILE=1024\\n\\nLimitNOFILE=65536\\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    got = check_open_files(Context(root=str(root)))
    assert got.name == "open files" and got.status == WARN, got
    assert "edge-agent@w1.service LimitNOFILE=1024" in got.detail
    assert "edge-agent@w2.service LimitNOFILE=65536" in got.detail
    assert "below 4096 for edge-agent@w1.service," in got.detail
    assert got.fix == UNIT_LIMIT_FIX and "LimitNOFILE=65536" in got.fix


def test_doctor_is_ok_when_the_units_limits_are_high(tmp_path, monkeypatch):
    """Rule: units at 65536 are OK (the line still shows them)."""
    root = _fake_root(tmp_path, ["w1"])
    _fake_systemctl(tmp_path / "bin", "LimitNOFILE=65536\\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    got = check_open_files(Context(root=str(root)))
    assert got.status == OK and "edge-agent@w1.service LimitNOFILE=65536" in got.detail, got


CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
from agent.ops.doctor import Context
from agent.ops.doctor_check import check_open_files
print(json.dumps(check_open_files(Context(root=sys.argv[3])).to_json()))
"""


def _in_child(soft, hard, root):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(soft), str(hard), str(root)],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_without_a_unit_doctor_judges_what_an_agent_started_here_gets(tmp_path):
    """Rule: with no unit installed (or no systemctl) the line shows doctor's own soft and
    hard limits; a hard limit below 4096 (what `run` would take) is a WARN whose fix raises
    the hard limit, nothing is asked of systemctl."""
    got = _in_child(256, 1000, tmp_path)
    assert got["status"] == WARN, got
    assert got["detail"].startswith("this process: soft 256, hard 1000 (run takes 1000): an "
                                    "agent started here gets 1000, below 4096")
    assert "ulimit -Hn 65536" in got["fix"] and "LimitNOFILE=65536" in got["fix"]


def test_a_high_hard_limit_is_ok_whatever_the_soft_one(tmp_path):
    """Rule: a soft limit of 1024 under a hard one of 4096 or more is OK: `run` raises the
    soft one to the hard one (at most 65536) at start-up."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip("this machine's hard open-file limit is %d" % hard)
    got = _in_child(1024, hard, tmp_path)
    assert got["status"] == OK and got["detail"].startswith("this process: soft 1024, "), got
