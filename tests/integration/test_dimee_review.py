"""DIMEE's saved state on real agents (testbed topology ``dimee``, demo bundle, loopback,
emulated devices and links): each node saves the thresholds it exits at, only a source keeps
pools, and a restarted source resumes its moved pool means only on the fit they moved from."""

import json
import os

from agent.policies.dimee import replay as dimee_replay
from agent.policies.dimee import rules as DR
from agent.testbed.local import node_configs, wait_records
from agent.testbed.procs import LocalAgents
from agent.testbed.report import read_records
from agent.testbed.topology import TOPOLOGY_DIR, load_topology
from engines.demo import DEMO_BUNDLE_DIR
from engines.exit_profile import load_exit_profile

PROFILE = load_exit_profile(os.path.join(DEMO_BUNDLE_DIR, "exit_profile.npz"))
WORKERS = ["mobile", "edge", "cloud"]


def _topology(tmp_path, unit):
    """The shipped ``dimee`` topology with the knob ``unit`` (lambda) set: it moves alpha*."""
    with open(os.path.join(TOPOLOGY_DIR, "dimee.json")) as f:
        obj = json.load(f)
    obj["knobs"]["dimee"]["unit"] = unit
    path = tmp_path / ("dimee-unit-%s.json" % unit)
    path.write_text(json.dumps(obj))
    return load_topology(str(path))


def _run(tmp_path, unit, run_dir, fresh):
    """Start every agent of the topology with knob ``unit`` on ``run_dir``'s state, let the
    source send its tasks, stop all; (configs, the source's records, each node's state)."""
    cfgs = node_configs(_topology(tmp_path, unit), DEMO_BUNDLE_DIR, "dimee", 5.0, 3.0, run_dir,
                        seed=1)
    records = os.path.join(cfgs["mob"].state_dir, "records.jsonl")
    before = len(read_records(records)) if os.path.exists(records) else 0
    with LocalAgents(run_dir, fresh=fresh) as agents:
        agents.write(cfgs)
        agents.start(WORKERS)
        agents.start(["mob"])
        assert wait_records({"mob": records}, {"mob": before + cfgs["mob"].max_tasks}, 120,
                            agents, lambda el, frac: None)
        agents.stop(["mob"])
        agents.stop_all()
    states = {}
    for n in ["mob"] + WORKERS:
        with open(os.path.join(cfgs[n].state_dir, "state.json")) as f:
            states[n] = json.load(f)["state"]
    return cfgs, read_records(records)[before:], states


def test_dimee_state_holds_the_used_thresholds_and_pools_resume_only_on_their_own_fit(
        tmp_path):
    """A DIMEE node's state.json names the thresholds it exits at (alpha* below the edge's
    last stage; none on the mobile 1..1, the cloud or the source), not the config's unused
    0.8s; only the source saves pools and counts. Restarted after a knob moved alpha* (unit
    0.05 -> 0.01), the source does not resume the means moved from the old fit: its pools go
    on from the new fit's sizes, and its log says so."""
    run_dir = str(tmp_path / "run")
    _, recs1, st1 = _run(tmp_path, 0.05, run_dir, fresh=True)
    old = dimee_replay.fit(PROFILE, DR.params_from_knobs({"unit": 0.05}))
    new = dimee_replay.fit(PROFILE, DR.params_from_knobs({"unit": 0.01}))
    assert old.alpha != new.alpha and list(old.pools.count) != list(new.pools.count)
    assert st1["edge"]["thresholds"] == {"1": old.alpha}
    assert st1["mobile"]["thresholds"] == st1["cloud"]["thresholds"] == {}
    assert st1["mob"]["thresholds"] == {}
    assert all("dimee_pools" not in st1[w] and "dimee_assigned" not in st1[w] for w in WORKERS)
    assert sum(st1["mob"]["dimee_pools"]["count"]) == sum(old.pools.count) + len(recs1)
    assert all(r["status"] == "completed" for r in recs1)

    cfgs, recs2, st2 = _run(tmp_path, 0.01, run_dir, fresh=False)
    assert all(r["status"] == "completed" for r in recs2)
    assert st2["edge"]["thresholds"] == {"1": new.alpha}
    pools = st2["mob"]["dimee_pools"]
    assert sum(pools["count"]) == sum(new.pools.count) + len(recs2)
    assert all(c >= f for c, f in zip(pools["count"], new.pools.count))
    with open(os.path.join(run_dir, "mob.log")) as f:
        assert "saved pool means not resumed" in f.read()
