"""Test-wide settings: one thread for every numeric library, so the suite behaves the same on a
loaded 2-core CI machine as on a workstation; and the ``exclusive`` mark for the few tests that
compare CPU times, which run with no other test beside them when the suite runs on several
pytest-xdist workers (``-n 2`` in setup.cfg)."""

import fcntl
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# The controller makes one folder of lock files per session; its workers inherit the name.
_LOCKS_ENV = "EDGE_AGENT_TEST_LOCKS"


def pytest_configure(config):
    if not hasattr(config, "workerinput") and _LOCKS_ENV not in os.environ:
        os.environ[_LOCKS_ENV] = tempfile.mkdtemp(prefix="edge-agent-tests-")
        config._edge_agent_locks = os.environ[_LOCKS_ENV]


def pytest_unconfigure(config):
    locks = getattr(config, "_edge_agent_locks", None)
    if locks:
        shutil.rmtree(locks, ignore_errors=True)


def _lock(name):
    folder = os.environ[_LOCKS_ENV]
    os.makedirs(folder, exist_ok=True)  # a name inherited from a session that has ended
    return os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT, 0o600)


@pytest.fixture(autouse=True)
def _exclusive_gate(request):
    """A readers-writer lock over the workers: every test holds "run" shared, an ``exclusive``
    test holds it alone. Both pass through "gate" first, which an exclusive test keeps while
    it waits, so the others cannot keep it waiting by starting test after test."""
    if not hasattr(request.config, "workerinput"):  # one process: nothing runs beside a test
        yield
        return
    exclusive = request.node.get_closest_marker("exclusive") is not None
    gate, run = _lock("gate"), _lock("run")
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(run, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield
    finally:
        os.close(run)  # closing drops the locks
        os.close(gate)
