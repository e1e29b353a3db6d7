"""Scenario and ``simulate`` limits: a final stage marked ``exit``, ``knobs.rounds`` and
``simulate --rounds`` bounded as ``plan --rounds`` is, and sweep values named once each."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.policies.setting import ScenarioError
from agent.policies.setting import MAX_ROUNDS
from agent.scenario.format import load_scenario
from agent.scenario.paper import synthetic_exit_profile
from engines.exit_profile import save_exit_profile

BASE = {"stages": [{"flops": 1e9, "input_bytes": 1e5, "exit": False},
                   {"flops": 1e9, "input_bytes": 1e5, "exit": True},
                   {"flops": 1e9, "input_bytes": 1e5, "exit": False}],
        "remaining": [1.0, 0.5, 1.0],
        "sources": [{"id": "s0", "rate": 2.0}],
        "workers": [{"id": "w1", "stage": 1, "capacity": 2e10},
                    {"id": "w2", "stage": 2, "capacity": 2e10},
                    {"id": "w3", "stage": 3, "capacity": 2e10}],
        "links": [{"from": "s0", "to": "w1", "rate": 1e7}, {"from": "w1", "to": "w2", "rate": 1e7},
                  {"from": "w2", "to": "w3", "rate": 1e7}]}


def _write(tmp_path, name="s.json", drop=(), **changes):
    obj = json.loads(json.dumps(BASE))
    obj.update(changes)
    for key in drop:
        del obj[key]
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def _error_line(argv, capsys) -> str:
    """``edge-agent ARGV`` exits 2 with exactly one error line and no traceback; returns it."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert len(lines) == 1, err
    return lines[0]


def test_final_stage_remaining_must_be_one_even_when_marked_exit(tmp_path):
    """Rule: every task entering the last stage is answered there, so a ``remaining`` below 1.0
    at the last stage is refused naming it, also when that stage says ``exit: true`` (it was
    accepted and silently ignored)."""
    stages = json.loads(json.dumps(BASE["stages"]))
    stages[2]["exit"] = True
    path = _write(tmp_path, stages=stages, remaining=[1.0, 0.5, 0.2])
    with pytest.raises(ScenarioError, match=r"remaining\[2\]: stage 3 is the last, so it must "
                                            r"be 1.0, got 0.2"):
        load_scenario(path)
    assert load_scenario(_write(tmp_path, "ok.json", stages=stages)).remaining == (1.0, 0.5, 1.0)


def test_final_stage_marked_exit_reads_the_profile_of_its_heads(tmp_path):
    """Rule: a last stage marked ``exit: true`` has one head, the final one: a profile with heads
    at the early exits plus the last stage is read (it was refused as not matching a head list
    naming the last stage twice) and plans as with ``exit: false``."""
    profile = synthetic_exit_profile([0.5, 0.7], [2, 3], 3, 10, num_samples=200, seed=1)
    save_exit_profile(str(tmp_path / "p.npz"), profile)
    stages = json.loads(json.dumps(BASE["stages"]))
    plain = _write(tmp_path, "plain.json", drop=["remaining"], exit_profile="p.npz")
    stages[2]["exit"] = True
    marked = _write(tmp_path, "marked.json", drop=["remaining"], stages=stages,
                    exit_profile="p.npz")
    a, b = load_scenario(plain), load_scenario(marked)
    assert a.exit_profile.exit_stages == b.exit_profile.exit_stages == (2, 3)
    from agent.policies.registry import plan

    assert plan(a, "dtoee").routing == plan(b, "dtoee").routing


def test_knobs_rounds_is_bounded_as_plan_rounds_is(tmp_path, capsys):
    """Rule: ``knobs.rounds`` above plan's --rounds bound is refused when the file is read,
    naming the file and field: DTO-EE on a setting where it does not converge ran that many
    rounds (10**9: no end) in plan and in every slot of simulate."""
    path = _write(tmp_path, knobs={"rounds": MAX_ROUNDS + 1})
    want = "%s: knobs.rounds: must be an integer in [1, %d], got %d" % (path, MAX_ROUNDS,
                                                                       MAX_ROUNDS + 1)
    assert _error_line(["plan", "-s", path], capsys).endswith(want)
    out = tmp_path / "out"
    assert _error_line(["simulate", "--scenario", path, "--out", str(out), "--no-plots"],
                       capsys).endswith(want)
    assert not out.exists()
    assert load_scenario(_write(tmp_path, "ok.json", knobs={"rounds": MAX_ROUNDS})).knobs == {
        "rounds": MAX_ROUNDS}


def test_simulate_rounds_is_bounded_as_plan_rounds_is(tmp_path, capsys):
    """Rule: simulate --rounds above plan's bound exits 2 in one line before anything runs
    (10**9 rounds per slot on a setting where DTO-EE does not converge never ended)."""
    path = _write(tmp_path)
    out = tmp_path / "out"
    for bad in (MAX_ROUNDS + 1, 0):
        line = _error_line(["simulate", "--scenario", path, "--out", str(out), "--no-plots",
                            "--rounds", str(bad)], capsys)
        assert line.endswith("--rounds: must be in 1..%d, got %d" % (MAX_ROUNDS, bad))
    assert not out.exists()


@pytest.mark.parametrize("opt,values,named", [("--rates", "2,3,2.0000001", "2"),
                                              ("--scales", "1,0.5,1", "1")])
def test_simulate_sweep_values_are_named_once(tmp_path, capsys, opt, values, named):
    """Rule: a sweep value given twice (to 6 digits, the precision of its row's name and of its
    records file ``records/POLICY_rateR.npz``) is refused before anything runs: its rows came
    twice and the second run's records silently replaced the first's."""
    path = _write(tmp_path)
    out = tmp_path / "out"
    line = _error_line(["simulate", "--scenario", path, "--out", str(out), "--no-plots",
                        "--policies", "cf", "--records", opt, values], capsys)
    assert line.endswith("%s: %s given more than once (values equal to 6 digits)"
                         % (opt, named))
    assert not out.exists()


def test_simulate_records_one_file_per_rate(tmp_path, capsys):
    """Rule: with distinct --rates every rate's per-task records get a file of their own."""
    path = _write(tmp_path)
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", path, "--out", str(out), "--no-plots", "--policies",
                 "cf", "--records", "--rates", "1,1.5", "--duration", "20", "--warmup",
                 "1"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (out / "records").iterdir()) == ["cf_rate1.5.npz",
                                                                   "cf_rate1.npz"]
