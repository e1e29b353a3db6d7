"""A Ctrl-C that the command line catches exits with status 130, even when it landed inside
code run from a string (``exec``/``eval``: namedtuple, dataclasses, many imports), where the
interpreter notes it as unhandled and would kill the process with SIGINT at exit instead."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the testbed command's run, replaced by one that receives a real SIGINT inside exec'd code
PROGRAM = """
import sys
import agent.commands.testbed as testbed
from agent.cli import main

def run(args):
    exec("import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nwhile True: pass")

testbed.run = run
sys.exit(main(["testbed"]))
"""


def test_ctrl_c_caught_inside_exec_code_still_exits_130_with_one_line(tmp_path):
    """Rule: SIGINT raised inside exec'd code and caught by the command line ends the
    process with exit status 130 (not a death by SIGINT, -2) and one line naming it. Run
    with -m, as `python -m agent` is: the interpreter checks its note when a module run so
    ends."""
    (tmp_path / "interrupted_testbed.py").write_text(PROGRAM)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, str(tmp_path)]))
    p = subprocess.run([sys.executable, "-m", "interrupted_testbed"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=120)
    assert p.returncode == 130, (p.returncode, p.stderr[-2000:])
    assert p.stderr.strip().splitlines() == ["edge-agent testbed: interrupted (SIGINT)"]
