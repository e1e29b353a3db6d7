"""Test-wide settings: one thread for every numeric library, so the suite behaves the same on a
loaded 2-core CI machine as on a workstation; and the ``exclusive`` mark for the few tests that
compare CPU times, which run with no other test beside them when the suite runs on several
pytest-xdist workers (``-n 4`` in setup.cfg): nor beside another file's module fixtures, set
up or torn down or kept between that file's tests. On the workers the files run longest
first by kind (``_file_rank``), so that no worker idles through a long file at the end."""

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
    # pytest-xdist hands out test files in the order the workers collected them (see
    # pytest_collection_modifyitems) rather than sorted by their number of tests, which put
    # the files of one or two long integration tests last and left the other workers idle for them.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _file_rank(items):
    """file -> where it runs on the workers: a file with an ``exclusive`` test first (the
    other workers' first files are all its test waits for, not a long file met mid-session),
    then the integration files (real processes: the longest files), then the others, so the
    many short unit files fill every worker to the end of the session."""
    rank = {}
    for item in items:
        path = _file_of(item)
        r = 0 if item.get_closest_marker("exclusive") else (
            1 if path.startswith("tests/integration/") else 2)
        rank[path] = min(r, rank.get(path, r))
    return rank


def pytest_collection_modifyitems(config, items):
    """On pytest-xdist workers, the files in the order of ``_file_rank`` (a stable sort: a
    file's tests, and the files of one rank, keep their collected order). Every worker sorts
    the same collection the same way, as xdist requires."""
    if not hasattr(config, "workerinput"):
        return
    rank = _file_rank(items)
    items.sort(key=lambda item: rank[_file_of(item)])


def pytest_unconfigure(config):
    locks = getattr(config, "_edge_agent_locks", None)
    if locks:
        shutil.rmtree(locks, ignore_errors=True)


def _lock(name):
    folder = os.environ[_LOCKS_ENV]
    os.makedirs(folder, exist_ok=True)  # a name inherited from a session that has ended
    return os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT, 0o600)


class _Gate:
    """This worker's side of the readers-writer lock over the workers: "run" is held shared
    from the start of a test file's first test until its last test has torn down (the file's
    module fixtures, and the agents or pip runs they keep going between tests, included), and
    held alone for an ``exclusive`` test. Both pass through "gate" first, which an exclusive
    test keeps while it waits, so no other worker can keep it waiting by starting file
    after file. A worker gives up its shared hold before it waits for the gate (workers
    each holding "run" shared while the one at the gate waits for them: no deadlock), so
    a file with an ``exclusive`` test among others keeps its own module fixtures set up beside
    another worker's exclusive test: such a file keeps none that run anything."""

    def __init__(self):
        self.gate, self.run = _lock("gate"), _lock("run")
        self.held = None  # None, "shared" or "exclusive"

    def enter(self, exclusive):
        if exclusive:
            if self.held:
                fcntl.flock(self.run, fcntl.LOCK_UN)
                self.held = None
            fcntl.flock(self.gate, fcntl.LOCK_EX)
            fcntl.flock(self.run, fcntl.LOCK_EX)
            self.held = "exclusive"  # the gate stays taken until the test has ended
        elif not self.held:
            fcntl.flock(self.gate, fcntl.LOCK_EX)
            fcntl.flock(self.run, fcntl.LOCK_SH)
            fcntl.flock(self.gate, fcntl.LOCK_UN)
            self.held = "shared"

    def leave(self, same_file_next):
        """After a test's teardown; ``same_file_next``: the next test is of the same file, so
        the file's module fixtures are still set up."""
        if same_file_next:
            if self.held == "exclusive":  # the gate is still ours: no one takes "run" meanwhile
                fcntl.flock(self.run, fcntl.LOCK_SH)
                self.held = "shared"
        elif self.held:
            fcntl.flock(self.run, fcntl.LOCK_UN)
            self.held = None
        fcntl.flock(self.gate, fcntl.LOCK_UN)  # a no-op where this worker does not hold it


_gate = []  # this worker's _Gate, made at its first test


def _file_of(item):
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """The lock around a test's whole run (setup, call, teardown): the module fixtures a test
    file sets up at its first test and tears down at its last are inside it, which a
    function fixture's hold would not cover. One process: nothing runs beside a test."""
    if not hasattr(item.config, "workerinput"):
        yield
        return
    if not _gate:
        _gate.append(_Gate())
    gate = _gate[0]
    gate.enter(item.get_closest_marker("exclusive") is not None)
    try:
        yield
    finally:
        gate.leave(nextitem is not None and _file_of(nextitem) == _file_of(item))
