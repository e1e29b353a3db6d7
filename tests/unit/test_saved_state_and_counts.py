"""Saved state that cannot be used, and the counters of tasks recovered from the journal.

- A ``state.json`` larger than a saved state can be (16 MB) is unusable like one of bad JSON:
  moved to ``state.json.corrupt`` (so the next save does not overwrite it), one WARNING that
  says "saved state" once; a FIFO in its place is not opened and not moved.
- ``tasks.crash_recovered`` counts the earlier run's tasks recorded lost at start (reason
  ``crash``) only: a task whose line was given up on a full disk (reason ``unrecorded``) was
  counted when it ended, and its line in ``records_dropped``.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from agent.node.book import SourceBook
from agent.node.records import RecordWriter
from agent.ops.state import STATE_MAX_BYTES, StateStore


def test_a_saved_state_over_the_size_bound_is_moved_aside_with_one_plain_warning(tmp_path,
                                                                                 caplog):
    """Rule: state.json over 16 MB is moved to state.json.corrupt and the agent starts fresh;
    the warning names the file and its size once, the next save writes a new state.json and
    leaves the set-aside file as it was."""
    store = StateStore(str(tmp_path))
    with open(store.path, "wb") as f:
        f.truncate(STATE_MAX_BYTES + 1)  # sparse: the size is what is checked
    with caplog.at_level(logging.WARNING, logger="agent.ops.state"):
        assert store.load() is None
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line == ("saved state %s is unusable (%d bytes, more than the %d a saved state can "
                    "be); moved to %s.corrupt, starting fresh"
                    % (store.path, STATE_MAX_BYTES + 1, STATE_MAX_BYTES, store.path))
    assert line.count("saved state") == 2 and "saved state:" not in line
    assert not os.path.exists(store.path)
    assert os.path.getsize(store.path + ".corrupt") == STATE_MAX_BYTES + 1
    assert store.save({"routing": {"w1": 1.0}})
    assert store.load() == {"routing": {"w1": 1.0}}
    assert os.path.getsize(store.path + ".corrupt") == STATE_MAX_BYTES + 1


def test_a_fifo_as_saved_state_is_not_opened_nor_moved(tmp_path, caplog):
    """Rule: a FIFO at state.json is not read (it would block) and stays where it is; the
    warning says what it is once."""
    store = StateStore(str(tmp_path))
    os.mkfifo(store.path)
    with caplog.at_level(logging.WARNING, logger="agent.ops.state"):
        assert store.load() is None
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line == ("cannot read saved state: %s is a FIFO; give a regular file; starting fresh"
                    % store.path)
    assert os.path.exists(store.path) and not os.path.exists(store.path + ".corrupt")


def test_tasks_given_up_on_a_full_disk_are_not_counted_as_crash_recovered(tmp_path):
    """Rule: tasks whose record lines were given up (the buffer bound on a full disk) and
    later recorded lost, reason unrecorded, leave crash_recovered at 0 (their outcome was
    counted when they ended; the lines are records_dropped); tasks of a crashed run recorded
    lost at start, reason crash, are counted there. The records file's descriptor points at
    /dev/full for the outage (the kernel's real ENOSPC)."""
    path = str(tmp_path / "records.jsonl")
    x = np.zeros((1, 2), np.float32)
    book = SourceBook("s1", RecordWriter(path, max_buffered=3))
    w = book.records
    tasks = [book.new(x, -1, 100.0 + i, 10.0 + i) for i in range(10)]
    good_fd, w._fd = w._fd, os.open("/dev/full", os.O_WRONLY)
    w._follow_path = lambda: None  # the swap is on purpose: records.jsonl is not reopened
    for t in tasks:
        book.complete({"id": t.id, "exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1,
                       "resends": 0, "worker": "w1"}, 200.0, 20.0)
    assert not w.flush()
    os.close(w._fd)
    w._fd = good_fd
    assert w.flush() and w.has_recovered()
    assert book.recover(300.0, 30.0, "unrecorded") == 7
    counts = book.counts()
    assert counts["crash_recovered"] == 0 and counts["records_dropped"] == 7
    assert counts["completed"] == 10 and counts["lost"] == 0
    crashed = [book.new(x, -1, 400.0, 40.0) for _ in range(2)]
    w.flush()
    del book, w  # a crash: the two tasks have no final line
    again = SourceBook("s1", RecordWriter(path))
    assert again.recover(500.0, 50.0) == len(crashed)
    assert again.counts()["crash_recovered"] == 2
    again.records.close()
