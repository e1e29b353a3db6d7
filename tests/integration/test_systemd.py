"""Unit files and `edge-agent install`: the installed units pass `systemd-analyze verify`,
install --root writes everything under the root only, --dry-run changes nothing; the
calibration unit starts the agents again only when they were up; a local client socket in the
agent unit's runtime directory is reachable by group edge-agent."""

import errno
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from agent.cli import main
from agent.commands.install import UNIT_FILES, unit_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEM_UNITS = "/lib/systemd/system"


def _install(root, *extra):
    return main(["install", "--root", str(root), "--no-pip", "--jetson", "yes",
                 "--instance", "w1", "--calibrate-timer"] + list(extra))


def _fake_groups(root):
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "group").write_text("root:x:0:\nvideo:x:44:\nrender:x:105:\njtop:x:998:\n")


@pytest.fixture
def installed(tmp_path):
    root = tmp_path / "root"
    _fake_groups(root)
    assert _install(root) == 0
    return root


def test_unit_files_keep_the_documented_service_contract():
    """Type=notify, watchdog, restart on failure, dedicated user, state/cache dirs, GPU reachable."""
    with open(os.path.join(unit_dir(), "edge-agent@.service")) as f:
        unit = f.read()
    for line in ["Type=notify", "WatchdogSec=30s", "Restart=on-failure", "User=edge-agent",
                 "SupplementaryGroups=video", "StateDirectory=edge-agent/%i",
                 "CacheDirectory=edge-agent", "RuntimeDirectory=edge-agent/%i",
                 "RuntimeDirectoryMode=0750",
                 "Wants=network-online.target jtop.service time-sync.target",
                 "NoNewPrivileges=yes", "ProtectSystem=strict"]:
        assert line in unit.splitlines(), line
    assert "After=network-online.target jtop.service" in unit
    assert "time-sync.target" in unit.split("After=", 1)[1].splitlines()[0]  # the slots' clock
    active = [ln for ln in unit.splitlines() if ln and not ln.startswith("#")]
    for forbidden in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock",
                      "PrivateUsers", "MemoryDenyWriteExecute"):
        assert not any(ln.startswith(forbidden + "=") for ln in active), forbidden


def test_install_root_writes_units_dirs_venv_and_enable_links(installed):
    root = installed
    system = root / "etc/systemd/system"
    for unit in UNIT_FILES:
        assert (system / unit).is_file(), unit
    # render and jtop exist in this root's /etc/group: added through the drop-in
    dropin = (system / "edge-agent@.service.d/10-device-groups.conf").read_text()
    assert "SupplementaryGroups=render jtop" in dropin
    keys = root / "etc/edge-agent/keys"
    assert stat.S_IMODE(os.stat(str(keys)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(str(root / "etc/edge-agent/fleet")).st_mode) == 0o755
    assert "EDGE_AGENT_BUNDLE=" in (root / "etc/edge-agent/calibrate.env").read_text()
    cfg = (root / "opt/edge-agent/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg  # Jetson: system TensorRT visible
    if shutil.which("systemctl"):
        assert (system / "edge-agent.target.wants/edge-agent@w1.service").is_symlink()
        assert (system / "multi-user.target.wants/edge-agent.target").is_symlink()
        assert (system / "timers.target.wants/edge-agent-calibrate.timer").is_symlink()
    # a second run keeps what exists and succeeds
    assert _install(root) == 0


def test_install_without_jetson_keeps_the_venv_isolated(tmp_path):
    root = tmp_path / "root"
    assert main(["install", "--root", str(root), "--no-pip", "--jetson", "no",
                 "--no-enable"]) == 0
    cfg = (root / "opt/edge-agent/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    assert main(["install", "--root", str(root), "--dry-run", "--jetson", "yes",
                 "--instance", "w1"]) == 0
    out = capsys.readouterr().out
    assert "--system-site-packages" in out
    assert "pip install" in out and "[jetson]" in out
    assert "enable edge-agent.target edge-agent@w1.service" in out
    assert os.listdir(str(root)) == []


def test_install_into_the_real_root_needs_root_privileges(capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # an ordinary user, whoever runs the test
    assert main(["install", "--instance", "w1"]) == 2
    assert "needs root" in capsys.readouterr().err


def _verify_root(root):
    """Make ``root`` enough of a system for `systemd-analyze verify --root`: the distribution's
    units (targets the agent orders against) and the executables the units name."""
    if not os.path.isdir(SYSTEM_UNITS):
        pytest.skip("no %s to verify against" % SYSTEM_UNITS)
    shutil.copytree(SYSTEM_UNITS, str(root / "usr/lib/systemd/system"), symlinks=True)
    for exe in _unit_executables(root / "etc/systemd/system"):
        if exe.startswith("/opt/edge-agent/"):
            continue  # the venv's, below
        if not os.path.exists(exe):
            pytest.skip("%s, named by a unit, is not on this machine" % exe)
        dest = root / exe.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(exe, str(dest))
    # What pip would write as the console script (install ran with --no-pip).
    script = root / "opt/edge-agent/venv/bin/edge-agent"
    script.write_text("#!/opt/edge-agent/venv/bin/python\nimport sys\n"
                      "from agent.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)


def _exec_lines(unit_text, key):
    """The ``key=`` command lines of a unit, without their prefixes (``-``, ``+``, ...)."""
    return [ln.split("=", 1)[1].lstrip("-+!@:") for ln in unit_text.splitlines()
            if ln.startswith(key + "=")]


def _unit_executables(system):
    """Every executable the unit files in ``system`` run (the first word of each Exec*=)."""
    out = set()
    for name in os.listdir(str(system)):
        path = system / name
        if path.is_file():
            for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStopPost"):
                out.update(cmd.split()[0] for cmd in _exec_lines(path.read_text(), key))
    return sorted(out)


def test_installed_units_pass_systemd_analyze_verify(installed):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    if not shutil.which("systemctl"):
        pytest.skip("systemctl is not installed")
    _verify_root(installed)
    units = ["edge-agent@w1.service", "edge-agent.target", "edge-agent-calibrate.service",
             "edge-agent-calibrate.timer"]
    proc = subprocess.run([analyze, "verify", "--root=" + str(installed)] + units,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=120)
    # verify exits 0 even for ignored unknown keys; any line it prints is a finding.
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout


def test_verify_catches_a_broken_unit(installed):
    """The verify step above would notice a mistake: a misspelt setting is reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not shutil.which("systemctl"):
        pytest.skip("systemd-analyze/systemctl are not installed")
    _verify_root(installed)
    unit = installed / "etc/systemd/system/edge-agent@.service"
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    proc = subprocess.run([analyze, "verify", "--root=" + str(installed),
                           "edge-agent@w1.service"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert "notfy" in proc.stdout


def test_python_m_agent_install_runs_from_a_checkout(tmp_path):
    """`sudo python3 -m agent install` from a clone works before anything is installed."""
    proc = subprocess.run([sys.executable, "-m", "agent", "install", "--dry-run", "--root",
                           str(tmp_path), "--jetson", "no"], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
    assert sys.executable + " -m venv" in proc.stdout  # the venv's interpreter, spelt out
    assert "--system-site-packages" not in proc.stdout


def _sh_argv(command):
    """A unit's command line as systemd passes it: ``$$`` is a literal ``$``; the words split
    as a shell would (the lines use plain single and double quotes only)."""
    return shlex.split(command.replace("$$", "$"))


FAKE_SYSTEMCTL = """#!/bin/sh
# stands in for systemctl: logs its arguments, answers from the scenario's files
echo "$*" >> "$FAKE/calls"
case "$1" in
  is-active) cat "$FAKE/states"; grep -qx active "$FAKE/states" ;;
  list-jobs) cat "$FAKE/jobs" ;;
esac
"""


@pytest.mark.parametrize("states, jobs, restarted", [
    ("active\nactive\n", "", True),  # target and an agent up: started again
    ("inactive\nactive\n", "", True),  # an agent started by hand, the target not
    ("inactive\nactivating\n", "", True),  # an agent waiting to restart after a crash
    ("inactive\n", "12 edge-agent.target start waiting\n", True),  # at boot: queued
    ("inactive\ninactive\n", "", False),  # stopped on purpose, or never started
    ("failed\n", "13 edge-agent@w1.service stop running\n", False),
])
def test_calibration_starts_the_agents_again_only_if_they_were_up(tmp_path, states, jobs,
                                                                  restarted):
    """The calibration unit's ExecStartPre stops edge-agent.target after noting in its runtime
    directory whether an agent was active or activating, or a start job of the target or an
    agent was queued (a timer run at boot is ordered before the agents); its ExecStopPost
    starts the target again only then. Run here with /bin/sh as the unit runs them, against a
    stand-in systemctl on PATH."""
    with open(os.path.join(unit_dir(), "edge-agent-calibrate.service")) as f:
        unit = f.read()
    assert "RuntimeDirectory=edge-agent-calibrate" in unit.splitlines()
    (pre,), (post,) = _exec_lines(unit, "ExecStartPre"), _exec_lines(unit, "ExecStopPost")
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin/systemctl").write_text(FAKE_SYSTEMCTL)
    (fake / "bin/systemctl").chmod(0o755)
    (fake / "states").write_text(states)
    (fake / "jobs").write_text(jobs)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {"PATH": "%s:/usr/bin:/bin" % (fake / "bin"), "FAKE": str(fake),
           "RUNTIME_DIRECTORY": str(run_dir)}
    for command in (pre, post):
        proc = subprocess.run(_sh_argv(command), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
        assert proc.returncode == 0, proc.stdout
    calls = (fake / "calls").read_text().splitlines()
    assert "stop edge-agent.target" in calls
    assert ("--no-block start edge-agent.target" in calls) == restarted, calls
    if restarted:  # the start comes last, after the stop
        assert calls[-1] == "--no-block start edge-agent.target", calls


def _as(uid, gid, groups):
    """Become ``uid`` (primary group ``gid``, supplementary ``groups``) in a forked child."""
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)


def _fork(child):
    """Run ``child()`` in a forked process (the interpreter itself may be unreadable to the
    users it becomes); its return value is the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = child()
        finally:
            os._exit(code)
    return pid


def test_a_client_socket_in_the_runtime_directory_is_reachable_by_group_edge_agent():
    """Under the agent unit (UMask=0027) a bound ipc:// socket is mode 0750, and connecting to a
    Unix socket needs write permission on it: a camera program's user in the agent's group is
    refused until the unit's ExecStartPost (run once the agent is READY) gives the group w.
    Real sockets, bound and connected as other users (root only)."""
    if os.geteuid() != 0:
        pytest.skip("binding and connecting as other users needs root")
    with open(os.path.join(unit_dir(), "edge-agent@.service")) as f:
        (post,) = _exec_lines(f.read(), "ExecStartPost")
    argv = _sh_argv(post)
    if not os.path.exists(argv[0]):
        pytest.skip("no %s here" % argv[0])
    import zmq

    agent_uid, camera_uid, gid = 64101, 64102, 64101  # unused ids: no user database entry
    top = tempfile.mkdtemp(prefix="ea-run-", dir="/tmp")  # others must traverse it
    os.chmod(top, 0o755)
    instance = os.path.join(top, "edge-agent", "cam")  # /run/edge-agent/%i as systemd makes it
    os.makedirs(instance)
    os.chown(instance, agent_uid, gid)
    os.chmod(instance, 0o750)
    sock = os.path.join(instance, "client.sock")
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()

    def agent():
        _as(agent_uid, gid, [])
        os.umask(0o027)
        ctx = zmq.Context()
        s = ctx.socket(zmq.PULL)
        s.bind("ipc://" + sock)
        os.write(ready_w, b"1")
        os.read(done_r, 1)  # bound until the test is done
        s.close(linger=0)
        ctx.term()
        return 0

    def camera():
        _as(camera_uid, camera_uid, [gid])
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        return c.connect_ex(sock)

    def camera_connects():
        return os.WEXITSTATUS(os.waitpid(_fork(camera), 0)[1])

    pid = _fork(agent)
    try:
        assert os.read(ready_r, 1) == b"1"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o750
        assert camera_connects() == errno.EACCES  # group r-x only
        post_argv = _sh_argv(post.replace("/run/edge-agent/%i", instance))
        assert "%" not in " ".join(post_argv)
        subprocess.run(post_argv, check=True, timeout=60, cwd="/",
                       preexec_fn=lambda: _as(agent_uid, gid, []))
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o770
        assert camera_connects() == 0
    finally:
        os.write(done_w, b"1")
        os.waitpid(pid, 0)
        shutil.rmtree(top)
