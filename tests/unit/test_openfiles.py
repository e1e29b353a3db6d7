"""An agent takes the open-file limit the system allows at start-up: at the usual soft limit a
busy source ran out of descriptors, and ZeroMQ then refused tcp:// connections (an ipc:// one aborted it). Run
in child processes (the limit is the process's own), with limits set as a shell's `ulimit`."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CODE = ("import logging, resource; logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "from agent.ops.openfiles import raise_open_files\n"
        "print(raise_open_files(), resource.getrlimit(resource.RLIMIT_NOFILE))\n")


def _limited(soft, hard):
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return subprocess.run([sys.executable, "-c", CODE], cwd=REPO, preexec_fn=limit,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


def test_the_soft_limit_is_raised_to_the_hard_one_and_a_low_hard_one_is_warned_of():
    """Rule: soft 64 under hard 1000 becomes 1000, and since that is below 4096 one WARNING
    says what runs out and how to raise it."""
    proc = _limited(64, 1000)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(1000, 1000) (1000, 1000)"
    assert "open-file limit 1000 (hard 1000)" in proc.stderr and "LimitNOFILE=" in proc.stderr


def test_a_high_hard_limit_is_taken_up_to_65536_without_a_word():
    """Rule: under a hard limit of 4096 or more the soft one becomes it, at most 65536;
    nothing is logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip("this machine's hard open-file limit is %d" % hard)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    proc = _limited(1024, hard)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("(%d, " % want) and proc.stderr == "", proc.stdout
