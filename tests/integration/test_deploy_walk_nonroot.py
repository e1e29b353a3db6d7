"""`install` run by a user who cannot write its target folders (a forgotten sudo) says to run
it as root, not to give "the agent's user" write access: install writes as whoever runs it.
A real install under a root-owned --root, run as user nobody through setpriv (skipped where
the tests do not run as root or setpriv is missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOBODY = 65534


def _as_nobody(argv, cwd):
    return subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                           "--clear-groups"] + argv, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO, HOME="/nonexistent"))


def _python_for_nobody(cwd):
    """An interpreter user nobody can run that imports the install command (the tests' own
    may live under root's home), or None."""
    for python in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if python and _as_nobody([python, "-c", "import agent.commands.install"],
                                 cwd).returncode == 0:
            return python
    return None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0
                    or shutil.which("setpriv") is None, reason="needs root and setpriv")
@pytest.mark.parametrize("reachable", [True, False])
def test_install_without_root_says_to_run_it_as_root(tmp_path, reachable):
    """A --root folder owned by root, install run as nobody: exit 2, one line naming the
    folder and the fix (run it as root, with sudo, or a --root this user can write), whether
    nobody can look into the folder (a 0755 one it cannot write) or not (below a 0700 one)."""
    top = tempfile.mkdtemp(prefix="deploy-walk-") if reachable else str(tmp_path)
    try:
        os.chmod(top, 0o755)
        root = os.path.join(top, "root")
        etc = os.path.join(root, "etc", "edge-agent")
        os.makedirs(etc)
        python = _python_for_nobody(top)
        if python is None:
            pytest.skip("no interpreter user nobody can run")
        proc = _as_nobody([python, "-m", "agent", "install", "--root", root, "--no-pip",
                           "--instance", "fast"], top)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Permission denied" in proc.stderr, proc.stderr
        assert "the agent's user" not in proc.stderr
        assert ("install writes as the user running it: run it as root, with sudo, or give a "
                "--root folder this user can write" in proc.stderr), proc.stderr
        assert os.listdir(etc) == []
    finally:
        if reachable:
            shutil.rmtree(top)
