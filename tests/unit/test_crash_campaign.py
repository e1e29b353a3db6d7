"""A source killed again and again (SIGKILL, power cuts: a crash loop under systemd): its
record journal stays compacted, whatever the number of restarts, and every task still gets
exactly one final line."""

from __future__ import annotations

import json

import numpy as np

from agent.node.book import SourceBook
from agent.node.records import RecordWriter

X = np.zeros((1, 2), np.float32)
RESULT = {"exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1, "resends": 0, "worker": "w1"}
TASKS_PER_RUN = 100  # fewer than a run's own lines would ever take past the compaction bound
RUNS = 30


class Clock:
    """A monotonic clock the test moves, so each flush is a group commit."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines()


def test_a_journal_does_not_grow_with_the_number_of_crash_restarts(tmp_path):
    """Rule: the journal is compacted once it has grown well past the open tasks, counting the
    lines earlier runs left: a source SIGKILLed after each short run (fewer lines per run than
    the bound) keeps a journal of bounded size, not one that grows with every restart (and
    that every start-up reads whole); each task has exactly one final line."""
    path = str(tmp_path / "records.jsonl")
    created, sizes = [], []
    for run in range(RUNS):
        clock = Clock()
        book = SourceBook("s1", RecordWriter(path, clock=clock))
        book.recover(1000.0 + run, 5.0)
        for i in range(TASKS_PER_RUN):
            task = book.new(X, 1, 1000.0 + run, 10.0 + i)
            created.append(task.id)
            book.complete(dict(RESULT, id=task.id), 1000.5 + run, 10.5 + i)
        for _ in range(2):  # the records committed, then their "-" lines
            clock.t += 10.0
            book.records.flush()
        created.append(book.new(X, 1, 1000.0 + run, 60.0).id)  # open at the kill
        sizes.append(len(_lines(path + ".journal")))
        del book  # SIGKILL: nothing closed
    bound = 1000 + 2 * TASKS_PER_RUN + 10  # the compaction bound and one run's lines
    assert max(sizes) <= bound, "journal lines after each run: %s" % sizes
    book = SourceBook("s1", RecordWriter(path))
    book.recover(2000.0, 5.0)
    book.records.close()
    ids = [json.loads(line)["id"] for line in _lines(path)]
    assert len(ids) == len(set(ids)) == len(created) and set(ids) == set(created)
    assert _lines(path + ".journal") == []  # a clean stop with nothing open: empty
