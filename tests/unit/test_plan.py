"""``edge-agent plan``: one JSON object with the documented keys (real subprocess), every
policy runs, and user mistakes exit 2 with one line naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.cli import main
from agent.policies.model import mean_response_time
from agent.scenario.format import load_scenario

KEYS = ["policy", "routing", "thresholds", "delay_s", "accuracy", "utility", "rounds",
        "converged", "link_utilisation", "worker_utilisation"]


def _write(tmp_path, knobs=None, rate=2.0):
    obj = {"stages": [{"flops": 2.21e9, "input_bytes": 1.4e5, "exit": False},
                      {"flops": 1.97e9, "input_bytes": 7.7e5, "exit": True},
                      {"flops": 1.68e9, "input_bytes": 7.7e5, "exit": False}],
           "remaining": [1.0, 0.6, 1.0],
           "sources": [{"id": "ed0", "rate": rate}, {"id": "ed1", "rate": rate * 1.5}],
           "workers": [{"id": "w1", "stage": 1, "capacity": 1.2e11},
                       {"id": "w2", "stage": 1, "capacity": 4e10},
                       {"id": "w3", "stage": 2, "capacity": 8e10},
                       {"id": "w4", "stage": 2, "capacity": 5e10},
                       {"id": "w5", "stage": 3, "capacity": 6e10}],
           "links": [{"from": "ed0", "to": "w1", "rate": 5e6},
                     {"from": "ed0", "to": "w2", "rate": 2e6},
                     {"from": "ed1", "to": "w1", "rate": 1e6},
                     {"from": "ed1", "to": "w2", "rate": 8e6},
                     {"from": "w1", "to": "w3", "rate": 1.5e7},
                     {"from": "w1", "to": "w4", "rate": 1.2e7},
                     {"from": "w2", "to": "w3", "rate": 1e7},
                     {"from": "w2", "to": "w4", "rate": 2e7},
                     {"from": "w3", "to": "w5", "rate": 1e7},
                     {"from": "w4", "to": "w5", "rate": 1e7}],
           "tradeoff": 0.5, "knobs": knobs or {}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(obj))
    return str(path)


def test_plan_json_is_exactly_one_object(tmp_path):
    """`plan --json` (a real process) prints one JSON object with the documented keys, and
    delay_s is the model's eq. 8 for the printed routing."""
    path = _write(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-m", "agent", "plan", "--scenario", path,
                          "--policy", "dtoee", "--rounds", "60", "--json"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    obj, end = json.JSONDecoder().raw_decode(out.stdout)
    assert out.stdout[end:].strip() == ""
    assert list(obj) == KEYS
    assert obj["policy"] == "dtoee" and obj["rounds"] <= 60
    assert obj["thresholds"] == {} and obj["accuracy"] is None
    assert obj["delay_s"] == pytest.approx(mean_response_time(load_scenario(path),
                                                              obj["routing"]))


@pytest.mark.parametrize("policy", ["dtoee", "cf", "bf", "ngto", "ga", "optimum"])
def test_every_policy_plans(tmp_path, capsys, policy):
    """Each policy gives a routing over the scenario's links with a finite model delay."""
    path = _write(tmp_path)
    assert main(["plan", "-s", path, "-p", policy, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["policy"] == policy and obj["delay_s"] > 0
    assert set(obj["routing"]) == {"ed0", "ed1", "w1", "w2", "w3", "w4"}


def test_paper_step_is_selectable_and_text_output(tmp_path, capsys):
    """--step paper runs eq. 19; the text form names the policy and the model delay."""
    path = _write(tmp_path)
    assert main(["plan", "-s", path, "--step", "paper", "--rounds", "30"]) == 0
    text = capsys.readouterr().out
    assert "policy      dtoee" in text and "s (model, eq. 8)" in text


@pytest.mark.parametrize("knobs,args,needle", [
    ({"step": "quick"}, [], "knobs.step"),
    ({"m": -1}, [], "knobs.m"),
    ({}, ["--rounds", "0"], "--rounds"),
    ({"ga_staleness": -2}, ["-p", "ga"], "knobs.ga_staleness"),
    ({"momentun": 0.5}, [], "knobs.momentun: unknown field (did you mean 'momentum'?)"),
    ({}, ["-p", "fixed"], "--policy: policy 'fixed' cannot run in plan"),
    ({}, ["-p", "magic"], "--policy: unknown policy 'magic' (known: dtoee, cf, bf, ngto, ga, "
                          "optimum, dimee, dimee-f, mlci, tabi, mlci-noens)"),
])
def test_mistakes_exit_2_naming_the_field(tmp_path, capsys, knobs, args, needle):
    """Bad knobs, options or policy names: exit status 2 and one stderr line naming the field
    (a knob no policy reads gets a hint; a policy name, the ones plan knows)."""
    path = _write(tmp_path, knobs)
    assert main(["plan", "-s", path] + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_overloaded_routing_warns_and_prints_null_delay(tmp_path, capsys):
    """A routing that overloads a worker: delay_s is null and stderr says how tight it is."""
    path = _write(tmp_path, rate=40.0)
    assert main(["plan", "-s", path, "-p", "bf", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["delay_s"] is None
    assert "no routing fits" in captured.err


def test_plan_help_names_exactly_the_registered_planners(capsys):
    """`plan --help` lists the planners without loading the registry (numpy-free help); the
    list it writes out is the registry's, no more and no less."""
    import re

    from agent.policies import registry

    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    listed = re.search(r"\(default dtoee\): (.*?) or one a plug-in", text).group(1)
    # argparse may wrap a line after a name's hyphen ("mlci-" / "noens")
    assert [n.strip().replace("- ", "-") for n in listed.split(",")] == registry.names("planner")
