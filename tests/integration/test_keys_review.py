"""`edge-agent keys generate` into a folder others may write: the agent refuses a secret key
there (whoever writes the folder can swap the key), so the command refuses it first, in one
line, exit 2, with nothing written, rather than print a pair no agent will load. Real
`python -m agent keys` processes and real files."""

from __future__ import annotations

import os
import subprocess
import sys

WAIT_S = 120  # a generous bound for a loaded machine


def _keys(*args):
    return subprocess.run([sys.executable, "-m", "agent", "keys"] + list(args),
                          capture_output=True, text=True, timeout=WAIT_S)


def test_generate_refuses_a_folder_others_may_write_and_writes_nothing(tmp_path):
    """Rule: `keys generate --dir D` with D writable by others (mode 0777, not sticky) exits 2
    with one line naming the folder and its fix, and leaves D empty."""
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(str(folder), 0o777)
    proc = _keys("generate", "--dir", str(folder), "--name", "n1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "others may write" in lines[0] and "chmod go-w %s" % folder in lines[0]
    assert "nothing written" in lines[0]
    assert os.listdir(str(folder)) == []


def test_generate_into_a_sticky_folder_gives_a_pair_the_agent_loads(tmp_path):
    """Rule: a sticky folder others may write (as /tmp) lets nobody else swap the key: the
    pair is written and `keys show` of its secret file accepts it."""
    folder = tmp_path / "sticky"
    folder.mkdir()
    os.chmod(str(folder), 0o1777)
    proc = _keys("generate", "--dir", str(folder), "--name", "n1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = _keys("show", str(folder / "n1.key_secret"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == proc.stdout.strip().splitlines()[-1]
