"""Knobs within their ranges: MDI-Exit's ``initial_interarrival_s`` lies within
[``min_interarrival_s``, ``max_interarrival_s``] (Alg. 3 never leaves them), and GA's
``ga_staleness`` scenario knob has the bound of ``plan --staleness`` (one constant for both)."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.policies.baselines.plans import MAX_STALENESS_ROUNDS, ga, staleness_knob
from agent.policies.mdi_exit.rules import Admission, MdiExitParamsError, params_from_knobs
from agent.policies.setting import ScenarioError
from agent.scenario.format import load_scenario


def _scenario(tmp_path, knobs):
    """A two-stage scenario file (one source, a worker per stage) with these knobs."""
    obj = {"stages": [{"flops": 2e9, "input_bytes": 1e5, "exit": False},
                      {"flops": 2e9, "input_bytes": 1e5, "exit": False}],
           "sources": [{"id": "cam", "rate": 2.0}],
           "workers": [{"id": "w1", "stage": 1, "capacity": 1e11},
                       {"id": "w2", "stage": 2, "capacity": 1e11}],
           "links": [{"from": "cam", "to": "w1", "rate": 5e6},
                     {"from": "w1", "to": "w2", "rate": 5e6}],
           "remaining": [1.0, 1.0], "tradeoff": 0.5, "knobs": knobs}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("knobs,shown", [
    ({"initial_interarrival_s": 20}, "[0.001, 10], got 20"),
    ({"initial_interarrival_s": 0.0005}, "[0.001, 10], got 0.0005"),
    ({"initial_interarrival_s": 1, "min_interarrival_s": 2}, "[2, 10], got 1"),
    ({"initial_interarrival_s": 1, "max_interarrival_s": 0.5}, "[0.001, 0.5], got 1"),
])
def test_an_initial_interarrival_outside_min_max_is_refused_naming_the_range(knobs, shown):
    """Rule: initial_interarrival_s outside [min_interarrival_s, max_interarrival_s] is an
    error naming the field, the two bounding fields and their values."""
    with pytest.raises(MdiExitParamsError) as err:
        params_from_knobs(knobs, "policy_knobs")
    assert str(err.value) == ("policy_knobs.initial_interarrival_s: must be in "
                              "[min_interarrival_s, max_interarrival_s] = " + shown)


def test_an_initial_interarrival_at_a_bound_is_where_alg3_starts():
    """Rule: a start at either bound is accepted and is where Alg. 3 starts."""
    for mu in (0.001, 10):
        assert Admission(params_from_knobs({"initial_interarrival_s": mu})).interarrival_s == mu


def test_an_unset_initial_interarrival_starts_within_the_bounds():
    """Rule: unset, the start (default 1 s) is taken within the bounds the knobs set: below
    min_interarrival_s = 2 it starts at 2, above max_interarrival_s = 0.5 at 0.5."""
    assert Admission(params_from_knobs({"min_interarrival_s": 2})).interarrival_s == 2
    assert Admission(params_from_knobs({"max_interarrival_s": 0.5})).interarrival_s == 0.5


def test_the_ga_staleness_knob_has_the_bound_of_plan_staleness(tmp_path, capsys):
    """Rule: knobs.ga_staleness is an integer in [0, MAX_STALENESS_ROUNDS], the bound plan
    --staleness has: at the bound it is taken, above it (10**9 too) it is refused, by the knob
    reader and by ga itself; plan --staleness above the bound says the same number."""
    assert staleness_knob({"ga_staleness": MAX_STALENESS_ROUNDS}) == MAX_STALENESS_ROUNDS
    assert staleness_knob({}) == 1
    for bad in (MAX_STALENESS_ROUNDS + 1, 10 ** 9, -1):
        with pytest.raises(ScenarioError) as err:
            staleness_knob({"ga_staleness": bad})
        assert str(err.value) == ("knobs.ga_staleness: must be an integer in [0, %d], got %d"
                                  % (MAX_STALENESS_ROUNDS, bad))
    sc = load_scenario(_scenario(tmp_path, {}))
    with pytest.raises(ScenarioError, match=r"^knobs\.ga_staleness: must be an integer in"):
        ga(sc, staleness=MAX_STALENESS_ROUNDS + 1)
    rc = main(["plan", "-s", _scenario(tmp_path, {}), "-p", "ga", "--staleness",
               str(MAX_STALENESS_ROUNDS + 1)])
    assert rc == 2 and capsys.readouterr().err.strip() == (
        "edge-agent plan: error: --staleness: must be in 0..%d, got %d"
        % (MAX_STALENESS_ROUNDS, MAX_STALENESS_ROUNDS + 1))


@pytest.mark.parametrize("command", [
    ["plan", "-p", "ga"], ["simulate", "--policies", "ga", "--duration", "2", "--warmup", "0.5"]])
def test_plan_and_simulate_refuse_a_ga_staleness_above_the_bound_naming_the_file(
        tmp_path, capsys, command):
    """Rule: a scenario whose knobs.ga_staleness is 10**9 makes plan -p ga and simulate
    --policies ga exit 2 in one line naming the file and knobs.ga_staleness."""
    path = _scenario(tmp_path, {"ga_staleness": 10 ** 9})
    extra = ["--out", str(tmp_path / "out")] if command[0] == "simulate" else []
    assert main(command[:1] + ["--scenario", path] + command[1:] + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        "%s: knobs.ga_staleness: must be an integer in [0, %d], got 1000000000"
        % (path, MAX_STALENESS_ROUNDS)), err
