"""Knob bounds that keep each policy's maths finite and its runs of a bounded length.

Every knob a policy reads is refused outside its range, in one line naming the knob, the value
and the range: DTO-EE's K and epsilon of eq. 11 are positive (the paper's) and K at most 1e12
(2K overflowed to inf at 1e308: NaN marginal delays), its routing and threshold steps at least
0.001 (smaller ones never move within a run), tau_c at most 0.5, headroom_target at least 0.5,
m and settle_rounds at most the longest phase (100000 rounds); MDI-Exit's periods within a
node's own ([0.001, 86400] s: a node ticks every state_interval_s) and its inter-arrival gaps
at least 1e-6 s; DIMEE's costs at most 1000 (1e308 overflowed every reward); MLCI's fixed
temperature within the fitted one's range and its weights within [1e-6, 1e6]. Each bound
itself is accepted, and so are the values the shipped topologies and scenarios use.
"""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.policies.dimee.rules import params_from_knobs as dimee_knobs
from agent.policies.dtoee.knobs import parse_knobs
from agent.policies.mdi_exit.rules import params_from_knobs as mdi_knobs
from agent.policies.mlci.rules import params_from_knobs as mlci_knobs
from agent.policies.registry import check_agent_knobs, check_scenario_knobs
from agent.testbed.presets import TOPOLOGY_DIR

READERS = {"dtoee": parse_knobs, "mdi-exit": mdi_knobs, "dimee": dimee_knobs,
           "mlci": mlci_knobs}
WHERE = {"dtoee": "knobs", "mdi-exit": "knobs.mdi-exit", "dimee": "knobs.dimee",
         "mlci": "knobs.mlci"}

REFUSED = [
    # (policy, knobs, the message after "<where>.")
    ("dtoee", {"penalty_k": 1e308}, "penalty_k: must be in (0, 1e+12], got 1e+308"),
    ("dtoee", {"penalty_k": 0}, "penalty_k: must be in (0, 1e+12], got 0"),
    ("dtoee", {"epsilon": 0}, "epsilon: must be in (0, 0.5), got 0"),
    ("dtoee", {"m": 10 ** 9}, "m: must be an integer in [1, 100000], got 1000000000"),
    ("dtoee", {"settle_rounds": 10 ** 9},
     "settle_rounds: must be an integer in [0, 100000], got 1000000000"),
    ("dtoee", {"threshold_step": 1}, "threshold_step: must be in [0.001, 0.5], got 1"),
    ("dtoee", {"headroom_target": 5e-324}, "headroom_target: must be in [0.5, 1), got 5e-324"),
    ("dtoee", {"step_scale": 5e-324}, "step_scale: must be in [0.001, 2], got 5e-324"),
    ("dtoee", {"paper_step_size": 5e-324},
     "paper_step_size: must be in [0.001, 1], got 5e-324"),
    ("mdi-exit", {"state_interval_s": 1e-9},
     "state_interval_s: must be in [0.001, 86400], got 1e-09"),
    ("mdi-exit", {"adapt_interval_s": 5e-324},
     "adapt_interval_s: must be in [0.001, 86400], got 5e-324"),
    ("mdi-exit", {"min_interarrival_s": 5e-324, "initial_interarrival_s": 5e-324},
     "initial_interarrival_s: must be in [1e-06, 86400], got 5e-324"),
    ("dimee", {"unit": 1e308}, "unit: must be in [0, 1000], got 1e+308"),
    ("dimee", {"cloud_fee": 1e308}, "cloud_fee: must be in [0, 1000], got 1e+308"),
    ("dimee", {"stage_units": "flops", "model_units": 1e308},
     "model_units: must be in (0, 1000], got 1e+308"),
    ("mlci", {"temperature": 5e-324}, "temperature: must be in [0.05, 20], got 5e-324"),
    ("mlci", {"weights": [1e308, 1e308, 1e308]},
     "weights: must list numbers in [1e-06, 1e+06], got [1e+308, 1e+308, 1e+308]"),
    ("mlci", {"weights": [5e-324, 1, 1]},
     "weights: must list numbers in [1e-06, 1e+06], got [5e-324, 1, 1]"),
]


@pytest.mark.parametrize("policy,knobs,says", REFUSED, ids=lambda v: str(v)[:30])
def test_a_knob_outside_its_range_is_refused_in_one_line_naming_knob_value_and_range(
        policy, knobs, says):
    """Rule: a knob value that breaks the policy's maths (NaN, overflow) or never lets a run
    move is refused by the policy's one knob reader, naming the knob, the value and the range."""
    with pytest.raises(UsageError) as err:
        READERS[policy](knobs)
    assert str(err.value) == "%s.%s" % (WHERE[policy], says)


ACCEPTED = [
    # each bound itself
    ("dtoee", {"penalty_k": 1e12, "epsilon": 1e-9, "m": 100000, "settle_rounds": 100000,
               "threshold_step": 0.5, "headroom_target": 0.5, "step_scale": 0.001,
               "paper_step_size": 0.001}),
    ("dtoee", {"threshold_step": 0.001, "step_scale": 2, "paper_step_size": 1, "m": 1,
               "settle_rounds": 0}),
    ("mdi-exit", {"state_interval_s": 0.001, "adapt_interval_s": 86400,
                  "min_interarrival_s": 1e-6, "initial_interarrival_s": 1e-6}),
    ("dimee", {"unit": 1000, "mobile": 1000, "edge": 0, "edge_offload": 1000,
               "cloud_offload": 1000, "cloud_fee": 1000, "stage_units": "flops",
               "model_units": 1000}),
    ("mlci", {"temperature": 0.05, "weights": [1e-6, 1, 1e6]}),
    ("mlci", {"temperature": 20}),
    # values the repository's topologies, tests and benchmarks use
    ("dtoee", {"headroom_target": 0.85, "step_scale": 1.0}),
    ("dtoee", {"step": "paper", "paper_step_size": 0.2, "m": 3, "threshold_step": 0.1}),
    ("dtoee", {"settle_rounds": 8, "settle_tolerance": 0.01, "momentum": 0.8}),
    ("mdi-exit", {"initial_interarrival_s": 0.2, "adapt_interval_s": 1.0,
                  "state_interval_s": 600.0}),
    ("mlci", {"tau": 0, "temperature": 1.0, "weights": [1, 2, 3]}),
]


@pytest.mark.parametrize("policy,knobs", ACCEPTED, ids=lambda v: str(v)[:30])
def test_a_knob_at_a_bound_or_as_the_repository_uses_it_is_accepted(policy, knobs):
    """Rule: the bounds are inclusive where the range says so, and every knob value the
    repository's topologies, tests and benchmarks set still parses."""
    READERS[policy](knobs)


def test_every_shipped_topologys_policy_knobs_stay_within_the_bounds():
    """Rule: each knobs.<policy> block of the shipped topologies passes its policy's node-side
    check (the one the agent applies to policy_knobs)."""
    names = sorted(n for n in os.listdir(TOPOLOGY_DIR) if n.endswith(".json"))
    assert names
    for name in names:
        with open(os.path.join(TOPOLOGY_DIR, name), encoding="utf-8") as f:
            topo = json.load(f)
        for policy, knobs in (topo.get("knobs") or {}).items():
            if policy != "fixed":  # per-node rows, checked against the topology's links
                check_agent_knobs(policy, knobs, "%s: knobs.%s" % (name, policy))


@pytest.mark.parametrize("policy,knobs,says", [
    ("dtoee", {"m": 10 ** 9}, "policy_knobs.m: must be an integer in [1, 100000]"),
    ("mdi-exit", {"state_interval_s": 1e-9},
     "policy_knobs.state_interval_s: must be in [0.001, 86400]"),
    ("mlci", {"temperature": 5e-324}, "policy_knobs.temperature: must be in [0.05, 20]"),
    ("dimee", {"unit": 1e308}, "policy_knobs.unit: must be in [0, 1000]"),
])
def test_a_node_configs_policy_knobs_have_the_same_bounds(policy, knobs, says):
    """Rule: a node config's policy_knobs are refused outside the same ranges, naming
    policy_knobs.<knob> (a node ticking every 1e-9 s spun its CPUs)."""
    with pytest.raises(UsageError) as err:
        check_agent_knobs(policy, knobs)
    assert str(err.value).startswith(says), str(err.value)


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


def test_plan_refuses_a_penalty_that_overflows_naming_the_file_and_knob(tmp_path, capsys):
    """Rule: plan on a scenario whose knobs.penalty_k is 1e308 (2K overflows: NaN marginal
    delays and RuntimeWarnings) exits 2 with one line naming the file and the knob, and the
    scenario check says the same."""
    path = _scenario(tmp_path, {"penalty_k": 1e308})
    assert main(["plan", "--scenario", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        "%s: knobs.penalty_k: must be in (0, 1e+12], got 1e+308" % path), err
    with pytest.raises(UsageError, match=r"^knobs\.penalty_k: must be in \(0, 1e\+12\]"):
        check_scenario_knobs({"penalty_k": 1e308})
