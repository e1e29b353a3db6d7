"""The model and fifo sim columns route by the sends made after the warm-up, as the measured
delay counts the tasks created after it (``agent.testbed.summary_window``)."""

import json
import os

from agent.testbed.columns import model_delay, routing_used
from agent.testbed.report import RunResult, admitted_lines
from agent.testbed.summary_window import AFTER_WARMUP, WHOLE_RUN, WindowSnapshot
from agent.testbed.topology import parse_topology
from agent.testbed.topology_bundle import StageInfo

STAGES = [StageInfo(1e6, 1000.0, False)]
WARMUP_S = 2.0


def topology_obj():
    """One source, one stage: a fast worker w1 and one 1000x slower, w2."""
    return {"sources": [{"id": "s1", "share": 1.0}],
            "workers": [{"id": "w1", "stage": 1, "emulate_capacity_flops": 1e8},
                        {"id": "w2", "stage": 1, "emulate_capacity_flops": 1e5}],
            "links": [{"from": "s1", "to": "w1", "rate_bytes_s": 1e7},
                      {"from": "s1", "to": "w2", "rate_bytes_s": 1e7}],
            "warmup_s": WARMUP_S, "agent": {"status_interval_s": 1.0}}


def result(rate=4.0):
    """A finished rate's result, its columns as the whole-run counters gave them."""
    return RunResult(policy="dtoee", rate=rate, created=10, completed=10, lost=0,
                     mean_delay_s=0.02, p95_delay_s=0.03, accuracy=1.0, model_delay_s=None,
                     capacities_emulated=True, fifo_sim_delay_s=0.7, remaining=[1.0],
                     routing={"s1": {"w1": 0.9, "w2": 0.1}})


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps(obj) + "\n")


def stats(node, **counters):
    return {"node_id": node, "counters": counters}


def record(i, created):
    return {"id": "s1-%d" % i, "source": "s1", "status": "completed", "created_mono": created,
            "finished_mono": created + 0.02, "created_wall": created, "finished_wall":
            created + 0.02, "delay_s": 0.02, "exit_stage": 1, "correct": True, "resends": 0}


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def run_window(tmp_path, first_created=100.0, tick=True):
    """A snapshot of the nodes one status interval after the warm-up (warm-up sends: one to
    the slow w2), then 9 sends to w1; the finished rate's result with the window applied."""
    topo = parse_topology(topology_obj())
    run_dir = str(tmp_path)
    clock = Clock(100.0)
    snap = WindowSnapshot(topo, STAGES, run_dir, clock=clock)
    write(os.path.join(run_dir, "s1", "stats.json"), stats("s1", sent_to_w1=2, sent_to_w2=1))
    for w in ("w1", "w2"):
        write(os.path.join(run_dir, w, "stats.json"), stats(w, tasks_in=1))
    if tick:
        snap.tick(0, "load")
        clock.t = 100.0 + WARMUP_S + 1.0
        snap.tick(0, "load")
    rate_dir = os.path.join(run_dir, "rate-4")
    write(os.path.join(rate_dir, "s1", "stats.json"), stats("s1", sent_to_w1=11, sent_to_w2=1))
    with open(os.path.join(rate_dir, "s1", "records.jsonl"), "w") as f:
        for i in range(10):
            f.write(json.dumps(record(i, first_created + 0.5 * i)) + "\n")
    r = result()
    snap.apply(0, r)
    return topo, r


def test_columns_route_by_the_sends_after_the_warm_up(tmp_path):
    """Rule: the warm-up's send to the slow worker is not in the routing the model is given."""
    topo, r = run_window(tmp_path)
    assert r.model_window == AFTER_WARMUP
    assert r.routing == {"s1": {"w1": 1.0, "w2": 0.0}}
    assert r.model_delay_s is not None
    assert r.model_delay_s == model_delay(topo, STAGES, 4.0, r.routing, [1.0])
    assert r.fifo_sim_delay_s is not None and r.fifo_sim_delay_s < 0.7
    assert admitted_lines([r]) == []
    # what the whole-run counters would have given: the slow worker overloaded
    whole = routing_used(topo, {"s1": stats("s1", sent_to_w1=11, sent_to_w2=1)})
    assert model_delay(topo, STAGES, 4.0, whole, [1.0]) is None


def test_no_reading_keeps_whole_run_columns_and_says_so(tmp_path):
    """Rule: without a reading after the warm-up, the columns stay and a line names the run."""
    _, r = run_window(tmp_path, tick=False)
    assert r.model_window == WHOLE_RUN
    assert r.routing == {"s1": {"w1": 0.9, "w2": 0.1}} and r.fifo_sim_delay_s == 0.7
    assert any("warm-up included" in line and "dtoee@4/s" in line for line in admitted_lines([r]))


def test_reading_before_the_records_warm_up_end_is_not_used(tmp_path):
    """Rule: a reading the records place within one status interval of the warm-up's end may
    hold warm-up sends, so the whole-run columns are kept."""
    _, r = run_window(tmp_path, first_created=101.5)
    assert r.model_window == WHOLE_RUN
    assert r.routing == {"s1": {"w1": 0.9, "w2": 0.1}}


def test_the_window_waits_for_the_agents_own_status_interval_when_the_topology_sets_none():
    """Rule: with no agent.status_interval_s in the topology the agents rewrite stats.json at
    the node config's default period, so the window's reading waits that long (not 1 s: a
    reading up to 5 s old would still hold warm-up sends)."""
    from agent.config.node import NodeConfig
    from agent.testbed.summary_window import status_interval_s

    obj = topology_obj()
    del obj["agent"]["status_interval_s"]
    assert status_interval_s(parse_topology(obj)) == NodeConfig.__dataclass_fields__[
        "status_interval_s"].default == 5.0
    assert status_interval_s(parse_topology(topology_obj())) == 1.0
