"""`edge-agent install` run again over a kept venv: on a Jetson the kept venv is made to see the
system site-packages (JetPack's TensorRT bindings), as a new one would; a venv whose interpreter
is gone (Python upgraded with JetPack) is made again instead of being kept broken. Real installs
under --root in tmp_path (no pip, no users touched)."""

from __future__ import annotations

import os
import subprocess

from agent.cli import main

VENV = "opt/edge-agent/venv"


def _install(root, capsys, *extra):
    assert main(["install", "--root", str(root), "--no-pip", "--no-enable"] + list(extra)) == 0
    return capsys.readouterr().out


def _outside_site_packages(venv):
    """The site-packages folders outside ``venv`` that its interpreter puts on sys.path."""
    out = subprocess.run([os.path.join(str(venv), "bin", "python"), "-c",
                          "import sys; print('\\n'.join(sys.path))"], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout.split()
    return [p for p in out if p.endswith("site-packages") and not p.startswith(str(venv))]


def test_a_kept_venv_on_a_jetson_is_made_to_see_the_system_site_packages(tmp_path, capsys):
    """A venv kept from an install with --jetson no gets include-system-site-packages = true
    when install runs again as a Jetson (a dry run only says so); its interpreter then has the
    system site-packages on sys.path, as `doctor`'s tensorrt fix promises."""
    root = tmp_path / "root"
    _install(root, capsys, "--jetson", "no")
    venv = root / VENV
    assert _outside_site_packages(venv) == []
    out = _install(root, capsys, "--jetson", "yes", "--dry-run")
    assert "# set include-system-site-packages = true in %s" % (venv / "pyvenv.cfg") in out
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    out = _install(root, capsys, "--jetson", "yes")
    assert "# set include-system-site-packages = true" in out
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert _outside_site_packages(venv) != []
    assert "include-system-site-packages" not in _install(root, capsys, "--jetson", "yes")


def test_a_venv_whose_interpreter_is_gone_is_made_again(tmp_path, capsys):
    """bin/python linking to an interpreter that no longer exists (a JetPack upgrade replaces
    Python) is named, and the venv is made again with --clear, so its python runs again."""
    root = tmp_path / "root"
    _install(root, capsys, "--jetson", "no")
    bindir = root / VENV / "bin"
    gone = tmp_path / "gone" / "python3.8"
    for name in os.listdir(str(bindir)):
        if name.startswith("python"):
            os.remove(str(bindir / name))
            os.symlink(str(gone), str(bindir / name))
    out = _install(root, capsys, "--jetson", "no")
    assert "%s links to %s, which is gone" % (bindir / "python", gone) in out
    assert " -m venv --clear --without-pip %s" % (root / VENV) in out
    ran = subprocess.run([str(bindir / "python"), "-c", "print('ok')"], stdout=subprocess.PIPE,
                         universal_newlines=True)
    assert ran.stdout.strip() == "ok"
