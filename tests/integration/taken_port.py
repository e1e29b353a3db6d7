"""What the tests of a start refused on a taken port share: a worker w1 (of s1 -> w1 -> w2)
that times its engine at start, ``python -m agent`` run as a real process, a port a plain
socket listens on, and the check that ``run`` refused before the slow steps."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from typing import Iterator, List

from agent.errors import EXIT_CONFIG
from engines.accelerator import ENGINES_FILE

from .agent_cluster import REPO, Cluster

REFUSED_S = 60.0  # a refused start is seconds; a loaded 2-core machine may take many


def agent_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m agent ARGS`` run to its end (one engine thread), its output captured."""
    return subprocess.run([sys.executable, "-m", "agent"] + list(args), cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=REFUSED_S)


def timed_worker(tmp_path, bundle: str, **fields):
    """Cluster s1 -> w1 -> w2 and w1's config (``fields`` on top) written, timing its engine
    at start: (cluster, w1's config, its path)."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed")
    cfg = c.config("w1", warmup_runs=5, timing_runs=50, **fields)
    os.makedirs(cfg.state_dir, exist_ok=True)
    c.agents.write({"w1": cfg})
    return c, cfg, c.agents.paths["w1"]


@contextlib.contextmanager
def taken(port: int) -> Iterator[socket.socket]:
    """127.0.0.1:``port`` listened on by a plain socket for the block."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        yield s


def refused_before_loading(done: subprocess.CompletedProcess, cfg) -> List[str]:
    """Assert ``run`` exited 78 with one error line before the slow steps: no engine loaded
    (no providers line), none timed (no capacity line), no engines.json; the error lines."""
    errors = [x for x in done.stderr.splitlines() if "error:" in x]
    assert done.returncode == EXIT_CONFIG and len(errors) == 1, done.stderr[-3000:]
    assert "providers used" not in done.stderr and "capacity" not in done.stderr, done.stderr
    assert not os.path.exists(os.path.join(cfg.state_dir, ENGINES_FILE))
    return errors
