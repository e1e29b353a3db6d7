"""`edge-agent install --package WHEEL` run again with a rebuilt wheel of the same version installs
the new wheel's files: pip alone keeps an installed version that a local wheel repeats. A real
venv with pip under --root in tmp_path and a small local wheel (no index, no users touched)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile

from agent.cli import main

NAME = "rvinstdummy"


def _wheel(folder, value):
    """A pure-Python wheel ``rvinstdummy 0.1`` whose module holds ``V = value``."""
    os.makedirs(str(folder), exist_ok=True)
    info = "%s-0.1.dist-info/" % NAME
    files = {NAME + "/__init__.py": "V = %d\n" % value,
             info + "METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: 0.1\n" % NAME,
             info + "WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                             "Tag: py3-none-any\n"}
    record = ""
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record += "%s,sha256=%s,%d\n" % (path, digest.decode(), len(text))
    files[info + "RECORD"] = record + info + "RECORD,,\n"
    path = os.path.join(str(folder), "%s-0.1-py3-none-any.whl" % NAME)
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_a_rebuilt_wheel_of_the_same_version_replaces_the_installed_one(tmp_path, capsys,
                                                                        monkeypatch):
    """The second install's wheel (same name and version, new contents) is what the venv then
    imports; install names the reinstall step without fetching dependencies again."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the wheel has no dependencies to fetch
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    root = tmp_path / "root"
    venv_python = str(root / "opt/edge-agent/venv/bin/python")
    for value in (1, 2):
        wheel = _wheel(tmp_path / ("build%d" % value), value)
        assert main(["install", "--root", str(root), "--jetson", "no", "--no-enable",
                     "--package", wheel]) == 0
        out = capsys.readouterr().out
        got = subprocess.run([venv_python, "-c", "import %s; print(%s.V)" % (NAME, NAME)],
                             stdout=subprocess.PIPE, universal_newlines=True)
        assert got.stdout.strip() == str(value)
        assert "-m pip install --force-reinstall --no-deps %s" % wheel in out
