"""records.jsonl is rotated by the source itself, bounded in size and count, and crash
recovery still gives every created task exactly one final line (agent.node.records)."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from agent.config.node import ConfigError, parse_config
from agent.node import records as records_mod
from agent.node.book import SourceBook
from agent.node.records import RecordWriter

X = np.zeros((1, 2), np.float32)
RESULT = {"exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1, "resends": 0, "worker": "w1"}


def _files(path):
    """records.jsonl and its rotated files, oldest first."""
    rotated = sorted(glob.glob(path + ".[0-9]*"), key=lambda p: -int(p.rsplit(".", 1)[1]))
    return rotated + [path]


def _ids(paths):
    out = []
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        assert not data or data.endswith(b"\n"), "torn line in %s" % p
        out += [json.loads(line)["id"] for line in data.splitlines()]
    return out


def _serve(book, n, t0=0.0):
    """Create and complete ``n`` tasks, flushing after each; their ids in order."""
    ids = []
    for i in range(n):
        task = book.new(X, 1, t0 + i, t0 + i)
        book.complete(dict(RESULT, id=task.id), t0 + i + 0.5, t0 + i + 0.5)
        book.records.flush()
        ids.append(task.id)
    return ids


def test_the_file_is_rotated_at_its_size_and_only_keep_files_older_ones_stay(tmp_path):
    """No file grows past max_bytes; .1 is the newest rotated file; past keep_files the oldest
    go; the lines kept are the newest tasks, in order, each once."""
    path = str(tmp_path / "records.jsonl")
    book = SourceBook("s1", RecordWriter(path, max_bytes=2000, keep_files=3))
    ids = _serve(book, 60)
    book.records.close()
    files = _files(path)
    assert [os.path.basename(p) for p in files] == [
        "records.jsonl.3", "records.jsonl.2", "records.jsonl.1", "records.jsonl"]
    assert all(os.path.getsize(p) <= 2000 for p in files)
    kept = _ids(files)
    assert kept == ids[-len(kept):] and len(kept) < len(ids)
    assert book.records.rotations > 3
    assert not os.path.exists(path + ".new")


def test_a_crash_after_rotations_records_each_open_task_once_from_the_current_file_only(
        tmp_path, monkeypatch):
    """After a rotation the journal names only tasks still open, so the start-up scan reads
    the current records.jsonl only; a crash still gives each open task one lost/crash line,
    and the task recorded just before the crash (its '-' line lost) is not recorded again."""
    path = str(tmp_path / "records.jsonl")
    book = SourceBook("s1", RecordWriter(path, max_bytes=1500, keep_files=2))
    _serve(book, 30)
    open_tasks = [book.new(X, 1, 100.0 + i, 100.0 + i) for i in range(3)]
    done = book.new(X, 1, 104.0, 104.0)
    book.complete(dict(RESULT, id=done.id), 105.0, 105.0)
    monkeypatch.setattr(book.records, "_journal", lambda data: None)  # its '-' line is lost
    book.records.flush()
    del book  # SIGKILL: nothing closed
    with open(path + ".journal") as f:
        journalled = {json.loads(line[1:])["id"] for line in f if line.startswith("+")}
    rotated = set(_ids(_files(path)[:-1]))
    assert rotated and not journalled & rotated, "the journal names tasks of a rotated file"

    scanned = []
    real_open = open

    def spy(name, *a, **kw):
        scanned.append(os.path.basename(str(name)))
        return real_open(name, *a, **kw)

    monkeypatch.setattr("builtins.open", spy)
    again = SourceBook("s1", RecordWriter(path, max_bytes=1500, keep_files=2))
    monkeypatch.setattr("builtins.open", real_open)
    assert not [n for n in scanned if n.startswith("records.jsonl.") and n[-1].isdigit()]
    assert again.recover(200.0, 200.0) == 3
    again.records.close()
    recs = [json.loads(line) for p in _files(path) for line in open(p)]
    ids = [r["id"] for r in recs]
    assert ids.count(done.id) == 1
    crash = {r["id"] for r in recs if r.get("reason") == "crash"}
    assert crash == {t.id for t in open_tasks}


def test_rotation_waits_while_the_journal_cannot_be_compacted(tmp_path, monkeypatch):
    """A journal that cannot be rewritten (a full disk) still names tasks recorded in this
    file: the file grows on past max_bytes and rotates once compaction works again."""
    path = str(tmp_path / "records.jsonl")
    book = SourceBook("s1", RecordWriter(path, max_bytes=1000, keep_files=2))

    def full(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records_mod, "write_atomic", full)
    ids = _serve(book, 20)
    assert not os.path.exists(path + ".1") and os.path.getsize(path) > 1000
    monkeypatch.undo()
    ids += _serve(book, 1, t0=50.0)
    book.records.close()
    assert os.path.exists(path + ".1") and _ids(_files(path)) == ids


def test_a_failed_rotation_keeps_every_line_in_the_same_file(tmp_path, caplog):
    """A folder where records.jsonl.1 goes makes the rename fail: counted as a rotation
    failure and logged once a minute, the lines go on into records.jsonl, nothing lost; the
    writes themselves worked, so they are not counted as failed (no "works again" flood)."""
    path = str(tmp_path / "records.jsonl")
    os.mkdir(path + ".1")
    os.mkdir(path + ".1/x")
    book = SourceBook("s1", RecordWriter(path, max_bytes=800, keep_files=1))
    ids = _serve(book, 12)
    book.records.close()
    assert _ids([path]) == ids
    w = book.records
    assert w.rotation_faults.failures >= 5 and w.rotations == 0 and w.faults.failures == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "records rotation" in warnings[0], warnings
    assert not os.path.exists(path + ".new")


def test_a_folder_among_the_kept_files_stops_rotation_instead_of_being_moved(tmp_path, caplog):
    """Rule: with keep_files 3, an operator's folder at records.jsonl.1 is not moved to .2 by
    the first rotation (the next ones then failing for good, the file growing without bound):
    rotation is refused while it is there, naming it, and starts once it is gone."""
    path = str(tmp_path / "records.jsonl")
    os.mkdir(path + ".1")
    (tmp_path / "records.jsonl.1" / "mine").write_text("an operator's file")
    book = SourceBook("s1", RecordWriter(path, max_bytes=800, keep_files=3))
    _serve(book, 12)
    w = book.records
    assert w.rotations == 0 and (tmp_path / "records.jsonl.1" / "mine").exists()
    assert not os.path.exists(path + ".2")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "records.jsonl.1 is not a file: move it away" in warnings[0]
    os.rename(path + ".1", str(tmp_path / "moved"))
    _serve(book, 12, t0=100.0)
    book.records.close()
    assert w.rotations > 0 and os.path.isfile(path + ".1")


def test_each_rotation_and_each_deleted_oldest_file_is_counted_for_stats(tmp_path):
    """Rule: rotations and the oldest files they deleted (their records gone) are counted in
    the source's task counts (stats.json ``tasks``), not only logged at INFO."""
    path = str(tmp_path / "records.jsonl")
    book = SourceBook("s1", RecordWriter(path, max_bytes=2000, keep_files=2))
    _serve(book, 60)
    book.records.close()
    counts = book.counts()
    assert counts["records_rotations"] == book.records.rotations > 2
    assert counts["records_files_deleted"] == counts["records_rotations"] - 2


def test_a_records_file_moved_or_deleted_while_open_is_followed_by_a_new_one(tmp_path):
    """An operator's rm or mv (or a rename-style logrotate) of records.jsonl: the next flush
    writes to a new records.jsonl instead of the unlinked or renamed file, and rotation
    then shifts nothing it should not (the rotated files stay whole)."""
    path = str(tmp_path / "records.jsonl")
    book = SourceBook("s1", RecordWriter(path, max_bytes=1500, keep_files=20))
    first = _serve(book, 20)
    rotated = _files(path)[:-1]
    before = _ids(rotated)
    os.unlink(path)
    second = _serve(book, 3, t0=100.0)
    assert _ids([path]) == second
    os.rename(path, str(tmp_path / "moved.jsonl"))
    third = _serve(book, 3, t0=200.0)
    book.records.close()
    assert _ids([str(tmp_path / "moved.jsonl")]) == second
    assert _ids(_files(path)) == before + third
    assert set(before) <= set(first)


def test_a_journal_lost_after_compaction_is_reopened_and_rotation_still_compacts(tmp_path,
                                                                              monkeypatch):
    """The journal's descriptor lost (its reopen after a compaction failed): the next journal
    line reopens it, and a rotation still compacts first, so no task recorded in a rotated
    file is recorded again as lost at the next start."""
    path = str(tmp_path / "records.jsonl")
    book = SourceBook("s1", RecordWriter(path, max_bytes=1500, keep_files=20))
    _serve(book, 3)
    os.close(book.records._jfd)
    book.records._jfd = -1
    ids = _serve(book, 30, t0=10.0)
    assert book.records._jfd >= 0 and book.records.rotations >= 2
    del book  # SIGKILL
    again = SourceBook("s1", RecordWriter(path, max_bytes=1500, keep_files=20))
    assert again.recover(100.0, 100.0) == 0
    again.records.close()
    kept = _ids(_files(path))
    assert kept[-30:] == ids and len(kept) == len(set(kept)) == 33


def test_lowering_keep_files_removes_the_files_past_it_at_the_next_rotation(tmp_path):
    path = str(tmp_path / "records.jsonl")
    book = SourceBook("s1", RecordWriter(path, max_bytes=800, keep_files=6))
    _serve(book, 40)
    book.records.close()
    assert os.path.exists(path + ".6")
    book = SourceBook("s1", RecordWriter(path, max_bytes=800, keep_files=2))
    _serve(book, 8, t0=100.0)
    book.records.close()
    assert [os.path.basename(p) for p in _files(path)] == [
        "records.jsonl.2", "records.jsonl.1", "records.jsonl"]


def test_a_symlink_left_at_the_new_files_name_is_not_followed(tmp_path):
    path = str(tmp_path / "records.jsonl")
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    os.symlink(str(target), path + ".new")
    book = SourceBook("s1", RecordWriter(path, max_bytes=800, keep_files=20))
    ids = _serve(book, 12)
    book.records.close()
    assert target.read_text() == "keep me\n"
    assert book.records.rotations >= 1 and _ids(_files(path)) == ids


def _source(**extra):
    obj = {"node_id": "s1", "role": "source", "stage": 0, "bundle": "b", "state_dir": "s",
           "control_bind": "tcp://127.0.0.1:5551", "data_bind": "tcp://127.0.0.1:5552",
           "security": "none", "peers": [{"id": "w1", "stage": 1, "control_address":
                                          "tcp://127.0.0.1:5561",
                                          "data_address": "tcp://127.0.0.1:5562"}]}
    obj.update(extra)
    return parse_config(obj, "/tmp")


def test_rotation_settings_default_to_64_mib_and_8_files_and_are_range_checked():
    cfg = _source()
    assert (cfg.records_max_bytes, cfg.records_keep_files) == (64 << 20, 8)
    assert _source(records_max_bytes=0).records_max_bytes == 0
    with pytest.raises(ConfigError, match="records_max_bytes"):
        _source(records_max_bytes=-1)
    with pytest.raises(ConfigError, match="records_keep_files"):
        _source(records_keep_files=0)
    with pytest.raises(ConfigError, match=r"records_keep_files: must be an integer in \[1, 1000\]"):
        _source(records_keep_files=3000000)  # every rotation looked at each of 3e6 names


def test_a_deleted_file_is_counted_only_when_it_goes_and_lowering_keep_files_counts_each(
        tmp_path):
    """Rule: ``records_files_deleted`` counts files that are really gone: with .1 and .3 (no
    .2) and keep_files 3 a rotation moves .1 to .2 and deletes nothing; with .1-.4 and
    keep_files 2, .2 is replaced and .3 and .4 removed: three."""
    path = str(tmp_path / "records.jsonl")
    for n in (1, 3):
        (tmp_path / ("records.jsonl.%d" % n)).write_text("{}\n")
    w = RecordWriter(path, journal=False, max_bytes=10, keep_files=3)
    w.write({"id": "a", "pad": "x" * 40})
    w.flush()
    w.write({"id": "b"})
    w.flush()  # past max_bytes: rotates
    assert w.rotations == 1 and w.files_deleted == 0
    assert os.path.exists(path + ".3") and os.path.exists(path + ".2")
    w.close()
    other = tmp_path / "other"
    other.mkdir()
    path = str(other / "records.jsonl")
    for n in (1, 2, 3, 4):
        (other / ("records.jsonl.%d" % n)).write_text("{}\n")
    w = RecordWriter(path, journal=False, max_bytes=10, keep_files=2)
    w.write({"id": "a", "pad": "x" * 40})
    w.flush()
    w.write({"id": "b"})
    w.flush()
    w.close()
    assert w.rotations == 1 and w.files_deleted == 3
    assert sorted(os.listdir(str(other))) == ["records.jsonl", "records.jsonl.1", "records.jsonl.2"]


def test_one_flush_of_a_big_backlog_rotates_at_most_once(tmp_path, monkeypatch):
    """Rule: a backlog written in parts (after a full disk) rotates before its first part at
    most, never between parts: with keep_files 1, rotating per part had deleted most of the
    lines the same flush had just written."""
    monkeypatch.setattr(records_mod, "FLUSH_CHUNK_BYTES", 1000)
    path = str(tmp_path / "records.jsonl")
    w = RecordWriter(path, journal=False, max_bytes=2000, keep_files=1)
    ids = ["t%03d" % i for i in range(100)]
    for tid in ids:
        w.write({"id": tid, "pad": "x" * 40})
    assert w.flush() is True
    w.close()
    assert w.rotations == 0 and _ids(_files(path)) == ids
