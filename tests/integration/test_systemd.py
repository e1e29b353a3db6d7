"""Unit files and `edge-agent install`: the installed units pass `systemd-analyze verify`,
install --root writes everything under the root only, --dry-run changes nothing."""

import os
import shutil
import stat
import subprocess
import sys

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
                 "CacheDirectory=edge-agent",
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
    systemctl = root / "bin/systemctl"
    systemctl.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("systemctl") or "/bin/systemctl", str(systemctl))
    # What pip would write as the console script (install ran with --no-pip).
    script = root / "opt/edge-agent/venv/bin/edge-agent"
    script.write_text("#!/opt/edge-agent/venv/bin/python\nimport sys\n"
                      "from agent.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)


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
