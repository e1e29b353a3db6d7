"""A testbed interrupted under load stops its sources before its workers: the sources' tasks
in flight still get their answers, and a source does not wait out its result timeouts for
workers already gone (SIGTERM to the testbed alone took ten seconds to end it)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import tempfile
from datetime import datetime

from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology
from tests.integration.test_testbed_netns import start_under_load
from tests.integration.test_testbed_runs import _agents_under

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _logged_at(path, word):
    """When the agent's log first says ``word`` (``stopping:``, ``stopped:``)."""
    with open(path) as f:
        for line in f:
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ agent\.node\.loop: %s"
                         % word, line)
            if m:
                return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError("%s never says %s" % (path, word))


def test_sigterm_under_load_stops_the_sources_before_the_workers(tmp_path):
    """Rule: SIGTERM to the testbed process alone while a rate is under load exits 143 with
    the `interrupted:` line, its source has stopped before any worker is told to stop, and no
    agent is left running."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    tmp = tempfile.mkdtemp()  # short: a unix socket's path has at most 107 bytes
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO, TMPDIR=tmp)
        p = start_under_load(topo, out, env, start_new_session=True)
        try:
            p.send_signal(signal.SIGTERM)  # the testbed alone: its agents get no signal
        finally:
            _, stderr = p.communicate(timeout=120)
        assert p.returncode == 143, stderr[-3000:]
        assert "interrupted: 0 of 1 runs finished" in stderr and "Traceback" not in stderr
        run = os.path.join(out, "latest", "cf")
        source_stopped = _logged_at(os.path.join(run, "cam-rate-8.log"), "stopped:")
        workers = [f for f in glob.glob(os.path.join(run, "*.log"))
                   if not os.path.basename(f).startswith("cam")]
        assert workers
        for log in workers:
            assert source_stopped <= _logged_at(log, "stopping:"), log
        assert _agents_under(out) == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
