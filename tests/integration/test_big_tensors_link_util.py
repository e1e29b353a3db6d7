"""Link utilisation of a paced link that carries more than it can during the load: the send
counters are read after the queues drained, so the bytes are divided by the time they were
sent in (the rate's first task to its last record), not by the load time alone. A real
testbed run on loopback (its senders pace the link) and ``report`` re-reading its folder,
which holds nothing the folders of earlier versions lack."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.policies.model import wire_bytes
from agent.testbed.columns import sending_s

from .test_big_tensors_limits import INPUT_BYTES, big  # noqa: F401 (the bundle fixture)

LINK_BYTES_S = 150e3  # cam -> w1: about 11 stage-1 tasks a second
RATE = 20.0  # offered: nearly twice what the link carries


def test_sending_time_runs_from_the_first_task_to_the_last_record():
    """Rule: the time a rate's sends were made in is its first creation to its last record
    on one clock (the monotonic pair first), never below the load time; records without
    times (or one clock half missing) give the load time."""
    recs = [{"created_mono": 10.0, "finished_mono": 11.0, "created_wall": 5.0},
            {"created_mono": 12.0, "finished_mono": 19.5},
            {"created_mono": 13.0, "finished_mono": None, "status": "rejected"}]
    assert sending_s(recs, 6.0) == 9.5
    assert sending_s(recs, 12.0) == 12.0
    assert sending_s([{"created_wall": 1.0, "finished_wall": 9.0}], 2.0) == 8.0
    assert sending_s([{"created_wall": 1.0}, {"finished_mono": 3.0}], 2.0) == 2.0
    assert sending_s([], 4.0) == 4.0


def test_a_paced_link_that_drained_after_the_load_stays_at_or_below_one(
        tmp_path, big, capsys):  # noqa: F811
    """Rule: the busiest link's utilisation is its sends' wire bytes over the time they were
    sent in and the link's rate: a link offered about twice what it carries, whose queue
    drained after the load (its bytes over the load time alone are above 1), reads at most 1,
    and ``report`` of the run folder gives the same figure."""
    bundle, replay = big
    topo = {"bundle": bundle, "warmup_s": 0.5, "slot_s": 2.0,
            "agent": {"replay_path": replay, "result_timeout_s": 10.0,
                      "heartbeat_interval_s": 0.2},
            "sources": [{"id": "cam", "share": 1.0}],
            "workers": [{"id": "w1", "stage": 1, "emulate_capacity_flops": 1e9},
                        {"id": "w2", "stage": 2, "emulate_capacity_flops": 1e9}],
            "links": [{"from": "cam", "to": "w1", "rate_bytes_s": LINK_BYTES_S},
                      {"from": "w1", "to": "w2"}]}
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(topo))
    out, got = tmp_path / "out", tmp_path / "got.json"
    rc = main(["testbed", "--topology", str(path), "--policies", "cf", "--rates", str(RATE),
               "--duration", "2", "--out", str(out), "--json", str(got), "--no-plots"])
    assert rc in (0, 1), capsys.readouterr().err[-2000:]  # 1: a task lost on the slow link
    (run,) = json.loads(got.read_text())["runs"]
    util = run["link_utilisation"]["cam->w1"]
    with open(out / "latest" / "cf" / "rate-20" / "run.json") as f:
        saved = json.load(f)
    assert set(saved) == {"kind", "policy", "rate", "records", "expected", "stats",
                          "duration_s", "load_s"}  # what earlier versions wrote too
    sent = saved["stats"]["cam"]["counters"]["sent_to_w1"]
    carried = sent * float(wire_bytes(INPUT_BYTES)) / LINK_BYTES_S  # seconds of link time
    assert carried / saved["load_s"] > 1.0, (sent, saved["load_s"])  # it drained afterwards
    assert 0.5 < util <= 1.02, (util, sent)
    capsys.readouterr()
    again = tmp_path / "again.json"
    assert main(["report", str(out), "--json", str(again)]) == 0
    (redone,) = json.loads(again.read_text())["runs"]
    assert redone["link_utilisation"]["cam->w1"] == pytest.approx(util)
