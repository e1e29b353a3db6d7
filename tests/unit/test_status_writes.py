"""When a node replaces its stats.json (agent.node.status.NodeStatus.write): only when
something but its time changed, at least every STATUS_REPEAT_S, and whenever the file is gone
or the write is forced (a stop)."""

import json
import os


class Clock:
    """A settable clock (seconds)."""

    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def _status(tmp_path, counters, wall, mono):
    from tests.unit.test_status_line import _status as status
    return status(tmp_path, counters, wall=wall, mono=mono)


def _read(tmp_path):
    return json.loads((tmp_path / "stats.json").read_text())


def test_stats_json_is_not_replaced_when_only_its_time_changed(tmp_path):
    """Rule: a write whose content differs from the last file written in wall_time alone
    writes nothing (an idle agent replaced it every status_interval_s for ever); a changed
    counter is written at the next call, with the time of that call."""
    counters, wall, mono = {}, Clock(1000.0), Clock(50.0)
    status = _status(tmp_path, counters, wall, mono)
    assert status.write()
    first = (tmp_path / "stats.json").stat().st_ino
    for _ in range(3):
        wall.t += 5.0
        mono.t += 5.0
        assert not status.write()
    assert (tmp_path / "stats.json").stat().st_ino == first  # never replaced
    assert _read(tmp_path)["wall_time"] == 1000.0 and status.skipped == 3
    counters["tasks_in"] = 4
    wall.t += 5.0
    assert status.write()
    got = _read(tmp_path)
    assert got["counters"] == {"tasks_in": 4} and got["wall_time"] == 1020.0


def test_an_unchanged_stats_json_is_rewritten_after_the_repeat_interval(tmp_path):
    """Rule: an unchanged stats.json is replaced again once STATUS_REPEAT_S has passed since
    its last write, so its wall_time on a running agent is never older than that."""
    from agent.node.status import STATUS_REPEAT_S

    wall, mono = Clock(1000.0), Clock(50.0)
    status = _status(tmp_path, {}, wall, mono)
    assert status.write()
    mono.t, wall.t = 50.0 + STATUS_REPEAT_S - 1.0, 1000.0 + STATUS_REPEAT_S - 1.0
    assert not status.write()
    mono.t, wall.t = 50.0 + STATUS_REPEAT_S, 1000.0 + STATUS_REPEAT_S
    assert status.write()
    assert _read(tmp_path)["wall_time"] == 1000.0 + STATUS_REPEAT_S


def test_a_removed_stats_json_or_a_forced_write_is_written_though_unchanged(tmp_path):
    """Rule: an unchanged stats.json is written again when the file is gone (moved aside or
    deleted) and when the write is forced (the final write at a stop)."""
    wall, mono = Clock(1000.0), Clock(50.0)
    status = _status(tmp_path, {}, wall, mono)
    assert status.write()
    os.remove(str(tmp_path / "stats.json"))
    wall.t += 5.0
    assert status.write() and _read(tmp_path)["wall_time"] == 1005.0
    wall.t += 5.0
    assert not status.write()
    assert status.write(force=True) and _read(tmp_path)["wall_time"] == 1010.0


def test_a_failed_write_is_tried_again_at_the_next_call_though_nothing_changed(tmp_path):
    """Rule: a write that failed (here: a folder where the file goes) does not count as
    written: the next call tries again, so the file appears once it can."""
    wall, mono = Clock(1000.0), Clock(50.0)
    status = _status(tmp_path, {}, wall, mono)
    (tmp_path / "stats.json").mkdir()
    assert not status.write() and status.skipped == 0
    os.rmdir(str(tmp_path / "stats.json"))
    assert status.write() and _read(tmp_path)["node_id"] == "w1"


def test_a_built_worker_writes_stats_json_again_only_when_its_counters_change(tmp_path):
    """Rule: a real worker node (built from a testbed config) writes stats.json once while
    idle, and again when its outbox counts something."""
    from .built_worker import built_worker

    bn = built_worker(str(tmp_path))
    try:
        status = bn.node.status
        assert status.write()
        assert not status.write() and not status.write()
        bn.node.outbox.count("tasks_in")
        assert status.write()
        got = _read(tmp_path / "w1a")
        assert got["counters"].get("tasks_in") == 1 and got["node_id"] == "w1a"
    finally:
        bn.close()
