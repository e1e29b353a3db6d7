"""`edge-agent install` run again says what it kept and what it replaced: a --bundle other than
the kept calibrate.env's is named as not used, with how to change it; an installed unit file
that differs from what install writes is named as replaced, with `systemctl edit` for local
changes. docs/deployment.md's "Removing" lines remove everything install writes. Real installs
under --root in tmp_path (no pip, no users touched)."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess

import pytest

from agent.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEM = "etc/systemd/system"


def _install(root, capsys, *extra):
    """Install under ``root`` (units not enabled unless ``--calibrate-timer`` is given: then
    edge-agent.target, edge-agent@fast and the timer); what it printed."""
    enable = ["--instance", "fast"] if "--calibrate-timer" in extra else ["--no-enable"]
    assert main(["install", "--root", str(root), "--no-pip", "--jetson", "no"] + enable
                + list(extra)) == 0
    return capsys.readouterr().out


def _groups(root):
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\nrender:x:105:\njtop:x:998:\n")


def test_a_new_bundle_against_a_kept_calibrate_env_is_named_with_how_to_change_it(
        tmp_path, capsys):
    """The kept calibrate.env is not rewritten; a --bundle other than the one it names is said
    to be unused, naming the file's bundle and the two ways to change it; the same bundle, or
    no --bundle at all, keeps it without a word."""
    root = tmp_path / "root"
    _install(root, capsys, "--bundle", "/opt/first")
    env = root / "etc/edge-agent/calibrate.env"
    assert "EDGE_AGENT_BUNDLE=/opt/first\n" in env.read_text()
    out = _install(root, capsys, "--bundle", "/opt/other")
    (line,) = [ln for ln in out.splitlines() if "calibrate.env" in ln]
    assert line.startswith("skip: write %s (exists, kept; " % env)
    assert "EDGE_AGENT_BUNDLE=/opt/first" in line and "--bundle /opt/other is not used" in line
    assert "edit the file, or remove it and run install again" in line
    assert "EDGE_AGENT_BUNDLE=/opt/first\n" in env.read_text()  # kept
    for extra in (["--bundle", "/opt/first"], []):
        out = _install(root, capsys, *extra)
        (line,) = [ln for ln in out.splitlines() if "calibrate.env" in ln]
        assert line == "skip: write %s (exists, kept)" % env, line


def test_an_edited_unit_file_is_named_as_replaced_and_an_unchanged_one_is_not(tmp_path, capsys):
    """A second install rewrites every unit file: one edited in place (or an earlier
    release's) is named "replaced", with `systemctl edit UNIT` for changes, and gets the
    shipped text back; the others are written without that word, and a `systemctl edit`
    drop-in is left alone."""
    root = tmp_path / "root"
    _groups(root)
    _install(root, capsys)
    unit = root / SYSTEM / "edge-agent@.service"
    shipped = unit.read_text()
    unit.write_text(shipped.replace("WatchdogSec=30s", "WatchdogSec=90s"))
    dropin = root / SYSTEM / "edge-agent-calibrate.service.d/10-device-groups.conf"
    dropin.write_text(dropin.read_text() + "# mine\n")
    override = root / SYSTEM / "edge-agent@.service.d/override.conf"
    override.write_text("[Service]\nWatchdogSec=90s\n")
    out = _install(root, capsys)
    replaced = [ln for ln in out.splitlines() if "replaced" in ln]
    assert len(replaced) == 2, out
    assert replaced[0].startswith("write %s " % unit)
    assert "use `systemctl edit edge-agent@.service` for changes" in replaced[0]
    assert replaced[1].startswith("write %s " % dropin)
    assert unit.read_text() == shipped
    assert override.read_text() == "[Service]\nWatchdogSec=90s\n"
    assert "replaced" not in _install(root, capsys)  # nothing differs now


def _removal_lines():
    """The shell lines of docs/deployment.md's "Removing" block, continuation lines joined."""
    with open(os.path.join(REPO, "docs", "deployment.md"), encoding="utf-8") as f:
        doc = f.read()
    section = doc.split("### Removing", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [ln for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]


def test_the_documented_removal_lines_remove_everything_install_writes(tmp_path, capsys):
    """Install under --root (units enabled, drop-ins, calibrate.env, venv); the "Removing"
    lines of docs/deployment.md, run against that root (`systemctl --root` disables, each `rm`
    path under it), leave nothing of edge-agent: every file install made is named by them."""
    if not shutil.which("systemctl"):
        pytest.skip("systemctl is not installed (it writes the enablement links)")
    root = tmp_path / "root"
    _groups(root)
    before = {p for p in glob.glob(str(root / "**"), recursive=True)}
    _install(root, capsys, "--calibrate-timer")
    system = root / SYSTEM
    assert (system / "multi-user.target.wants/edge-agent.target").is_symlink()
    assert (system / "edge-agent-calibrate.service.d/10-device-groups.conf").is_file()
    lines = _removal_lines()
    assert any(ln.startswith("sudo userdel edge-agent") for ln in lines)
    for line in lines:
        argv = shlex.split(line, comments=True)
        if argv[:3] == ["sudo", "systemctl", "disable"]:
            units = [a for a in argv[3:] if not a.startswith("-")]
            subprocess.run(["systemctl", "--root=" + str(root), "disable"] + units,
                           check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        elif argv[:3] == ["sudo", "rm", "-rf"]:
            for pattern in argv[3:]:
                assert pattern.startswith("/"), pattern
                for path in glob.glob(str(root) + pattern):
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.remove(path)
    left = [p for p in glob.glob(str(root / "**"), recursive=True)
            if p not in before and not os.path.isdir(p)]
    assert left == [], left
    # what stays is only folders, none of them edge-agent's
    assert not [p for p in glob.glob(str(root / "**"), recursive=True)
                if re.search(r"edge-agent", os.path.relpath(p, str(root)))]


def test_setuptools_build_leftovers_are_cleared_from_the_checkout_before_and_after_pip(tmp_path):
    """Rule: pip builds a checkout in place and setuptools puts into the wheel what
    ``build/lib`` still holds, so a module removed from the checkout (a `git pull`) would be
    installed again: install removes the checkout's ``build/`` around pip (said in the plan;
    a dry run only says it). A wheel, or a folder that is no checkout, is left alone."""
    import io

    from agent.commands.install import Plan
    from agent.commands.install_files import clean_build_dir

    checkout = tmp_path / "edge-agent"
    (checkout / "build/lib/agent").mkdir(parents=True)
    (checkout / "build/lib/agent/removed_since.py").write_text("X = 1\n")
    (checkout / "setup.cfg").write_text("[metadata]\nname = edge-agent\n")
    said = io.StringIO()
    clean_build_dir(Plan(dry_run=True, out=said), str(checkout))
    assert said.getvalue() == "would: rm -rf %s  # setuptools' leftovers\n" % (checkout / "build")
    assert (checkout / "build/lib/agent/removed_since.py").exists()
    clean_build_dir(Plan(dry_run=False, out=io.StringIO()), str(checkout))
    assert not (checkout / "build").exists() and (checkout / "setup.cfg").exists()
    other = tmp_path / "not-a-checkout"
    (other / "build").mkdir(parents=True)
    said = io.StringIO()
    clean_build_dir(Plan(dry_run=False, out=said), str(other))
    clean_build_dir(Plan(dry_run=False, out=said), str(tmp_path / "edge_agent-0.1.0.whl"))
    assert (other / "build").is_dir() and said.getvalue() == ""
