"""`edge-agent install` refuses what would break a device: instance names that are not plain,
a package name looked up on the index (edge-agent there is another project); --root images get
venv scripts that name the final path; --jetson yes says it was asked, not detected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.cli import main
from agent.commands.install import InstallError, Plan, package_spec, relocate_venv

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", ["bad name", "", ".hidden", "-x", "a/b"])
def test_instance_names_that_are_not_plain_are_refused(tmp_path, capsys, name):
    """One error line, exit 2, nothing written."""
    rc = main(["install", "--root", str(tmp_path), "--no-pip", "--instance=" + name])
    assert rc == 2 and "--instance" in capsys.readouterr().err
    assert os.listdir(str(tmp_path)) == []


def test_jetson_yes_is_reported_as_asked_not_detected(tmp_path, capsys):
    rc = main(["install", "--dry-run", "--root", str(tmp_path), "--jetson", "yes"])
    out = capsys.readouterr().out
    assert rc == 0 and "Jetson (L4T) (--jetson yes)" in out and "detected" not in out
    assert "[jetson]" in out and "[cpu]" not in out


def test_a_bare_package_name_is_never_installed_from_the_index(tmp_path):
    """--package edge-agent is refused; a wheel path or a checkout is used as given."""
    with pytest.raises(InstallError, match="package index"):
        package_spec("edge-agent")
    wheel = tmp_path / "edge_agent-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert package_spec(str(wheel)) == str(wheel)
    assert package_spec(None) == REPO  # this checkout


def test_root_image_venv_scripts_name_the_final_path(tmp_path):
    """A venv made under --root DIR runs at /opt/edge-agent/venv: shebangs and activate say so."""
    venv = tmp_path / "root/opt/edge-agent/venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    script = venv / "bin/edge-agent"
    script.write_text("#!%s/bin/python\nprint('hi')\n" % venv)
    script.chmod(0o755)
    relocate_venv(Plan(False, open(os.devnull, "w")), str(venv), "/opt/edge-agent/venv")
    assert script.read_text().startswith("#!/opt/edge-agent/venv/bin/python\n")
    assert os.access(str(script), os.X_OK)
    assert str(venv) not in (venv / "bin/activate").read_text()
