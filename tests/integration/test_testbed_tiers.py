"""DIMEE and MLCI run by real agents (testbed topologies ``dimee`` and ``mlci``, demo bundle,
loopback, emulated devices and links): every task answered, and each answer the one the
exit-profile replay gives for the task's row (checks D-10, M-12, M-13 of docs/dimee-mlci.md)."""

import json
import os
import time

import numpy as np

from agent.cli import main
from agent.policies.dimee import replay as dimee_replay
from agent.policies.dimee import rules as DR
from agent.policies.mlci import replay as mlci_replay
from agent.policies.mlci import rules as MR
from agent.testbed.local import node_configs, wait_records
from agent.testbed.procs import LocalAgents
from agent.testbed.report import read_records
from agent.testbed.topology import load_topology
from engines.demo import DEMO_BUNDLE_DIR
from engines.exit_profile import load_exit_profile

PROFILE = load_exit_profile(os.path.join(DEMO_BUNDLE_DIR, "exit_profile.npz"))
TIER_OF = {"mobile": DR.MOBILE, "edge": DR.EDGE, "cloud": DR.CLOUD}
LEVEL_OF = {"end": 0, "edge": 1, "cloud": 2}


def _testbed(tmp_path, topology, policy):
    """Run ``testbed --topology T --policies P --rates 5 --duration 6``; (run, records, dir)."""
    out, result = tmp_path / "out", tmp_path / "result.json"
    rc = main(["testbed", "--topology", topology, "--policies", policy, "--rates", "5",
               "--duration", "6", "--out", str(out), "--json", str(result), "--no-plots"])
    assert rc == 0
    run = json.loads(result.read_text())["runs"][0]
    source = load_topology(topology).sources[0].id
    run_dir = out / "latest" / policy
    return run, read_records(str(run_dir / "rate-5" / source / "records.jsonl")), run_dir


def _all_answered(run, records):
    assert run["created"] > 0 and run["lost"] == 0
    assert run["completed"] == run["created"] == len(records)
    assert all(r["status"] == "completed" for r in records)
    assert all(r["row"] % 2 == 1 for r in records)  # test rows only (replay_rows = "test")


def test_dimee_f_on_real_agents_answers_each_row_as_the_replay(tmp_path):
    """D-10: dimee-f on the dimee topology loses nothing; each task's tier (the answering
    worker) is the nearest fixed pool mean of its row's embedding, and its exit stage and
    correctness are the replay's for that row (>= 99 %: float ties aside); the mobile answers
    at stage 1 only, the edge at 1 or 2, the cloud at 4; the source's sends are one per issue."""
    run, records, run_dir = _testbed(tmp_path, "dimee", "dimee-f")
    _all_answered(run, records)
    params = DR.params_from_knobs({"adaptive": False})
    model = dimee_replay.fit(PROFILE, params)
    rows = np.array([r["row"] for r in records])
    tiers = np.argmin(DR.distances(model.pools, PROFILE.embedding[rows]), axis=1)
    heads = DR.answer_heads(PROFILE.confidence[rows], tiers, model.alpha, model.layout)
    stages = np.asarray(PROFILE.exit_stages)[heads]
    agree = [TIER_OF[r["worker"]] == t and r["exit_stage"] == s
             and r["correct"] == bool(PROFILE.correct[row, h])
             for r, row, t, h, s in zip(records, rows, tiers, heads, stages)]
    assert sum(agree) >= 0.99 * len(records), (sum(agree), len(records))
    allowed = {"mobile": {1}, "edge": {1, 2}, "cloud": {4}}
    assert all(r["exit_stage"] in allowed[r["worker"]] for r in records)
    stats = json.loads((run_dir / "rate-5" / "mob" / "stats.json").read_text())["counters"]
    sent = sum(v for k, v in stats.items() if k.startswith("sent_to_"))
    assert sent == sum(r["attempts"] for r in records)


def _mlci_expected(row, level, model, params):
    """(exit stage of ``level``'s model, ensemble class after it, its tempered confidence)
    for profile ``row``, by the per-sample functions of ``rules``."""
    vec, wsum, confs = None, 0.0, []
    for ell in range(level + 1):
        cols = model.cols[ell]
        col = cols[MR.model_exit(PROFILE.confidence[row, list(cols)], params.tau,
                                 params.patience)]
        logits = PROFILE.logits[row, col]
        vec, wsum = MR.ensemble_add(vec, wsum, float(model.weights[ell]), MR.softmax(logits))
        confs.append(float(MR.tempered_confidence(logits, float(model.temperatures[col]))))
    return PROFILE.exit_stages[col], MR.ensemble_answer(vec, wsum)[1], confs[-1]


def test_mlci_on_real_agents_answers_by_patience_and_ensemble(tmp_path):
    """M-12: mlci on the mlci topology loses nothing; for each task (>= 99 %: float ties
    aside) the answering level's exit stage is the patience rule's for its row, its class is
    the argmax of the weighted ensemble of the softmaxes of every level that ran (so each
    escalated TASK carried the running ensemble), and no level below the top answered with a
    tempered confidence <= t (there p = 1: always offloaded). Level fractions: reported."""
    run, records, _ = _testbed(tmp_path, "mlci", "mlci")
    _all_answered(run, records)
    params = MR.params_from_knobs({})
    model = mlci_replay.fit(PROFILE, params, (1, 3, 4))
    ok = 0
    for r in records:
        assert r["level"] == LEVEL_OF[r["worker"]]
        stage, cls, conf = _mlci_expected(r["row"], r["level"], model, params)
        ok += r["exit_stage"] == stage and r["cls"] == cls
        if r["level"] < 2:
            assert conf > params.confidence_threshold
    assert ok >= 0.99 * len(records), (ok, len(records))


def test_mlci_edge_killed_mid_run_escalations_go_to_the_cloud(tmp_path):
    """M-13: SIGKILL the edge level mid-run: the end level escalates to the cloud (the next
    alive level) from then on, and no task is lost (those the edge held are re-issued)."""
    topo = load_topology("mlci")
    run_dir = str(tmp_path / "run")
    cfgs = node_configs(topo, DEMO_BUNDLE_DIR, "mlci", 5.0, 8.0, run_dir, seed=3)
    records_path = os.path.join(cfgs["user"].state_dir, "records.jsonl")
    with LocalAgents(run_dir) as agents:
        agents.write(cfgs)
        agents.start(["end", "edge", "cloud"])
        agents.start(["user"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not os.path.exists(records_path):
            time.sleep(0.1)
        time.sleep(2.5)
        agents.kill("edge")
        killed = time.time()
        assert wait_records({"user": records_path}, {"user": cfgs["user"].max_tasks}, 120,
                            agents, lambda el, frac: None)
        agents.stop(["user"])
        time.sleep(cfgs["end"].status_interval_s + 0.2)
        end_stats = json.loads(open(os.path.join(cfgs["end"].state_dir, "stats.json")).read())
    records = read_records(records_path)
    assert len(records) == cfgs["user"].max_tasks
    assert all(r["status"] == "completed" for r in records), [r for r in records
                                                              if r["status"] != "completed"]
    late = [r for r in records if r["created_wall"] > killed + 2.0]
    assert late and all(r["worker"] in ("end", "cloud") for r in late)
    assert end_stats["counters"].get("sent_to_cloud", 0) > 0
